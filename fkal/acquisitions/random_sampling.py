"""The ``random`` baseline: P unlabeled images drawn uniformly, without replacement."""
from __future__ import annotations

import numpy as np
import torch

from .contract import AcquisitionSpec, QueryContext, QueryResult


def random_query(ctx: QueryContext) -> QueryResult:
    """P unlabeled images drawn uniformly with ``ctx.generator``."""
    pick = torch.randperm(len(ctx.unlabeled), generator=ctx.generator)[:ctx.budget].numpy()
    return QueryResult(np.asarray(ctx.unlabeled)[pick])


SPECS = (AcquisitionSpec("random", random_query, title="random"),)
