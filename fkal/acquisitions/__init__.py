"""Acquisition functions: which unlabeled images to label next.

  contract.py         QueryContext, QueryResult, TaskHooks: the one ``query(ctx) -> QueryResult`` contract
  registry.py         every acquisition by name (ACQUISITIONS), their task hooks and command-line options
  random_sampling.py  random
  fisher_kernel.py    the paper's method: pcc, pfk, pfk-sum (Algorithm 1)
  uncertainty.py      MC-dropout uncertainty: varR, entropy, bald, std, and ensembles
  coreset.py          core-set (k-center greedy on penultimate features)
  similar.py          SIMILAR: FLQMI with the misclassified validation images as the query set
  typiclust.py        TypiClust: typical images of uncovered clusters of self-supervised features
VAAL, TA-VAAL and learning loss live in ``vaal/``. This package imports nothing on its own: import the module you
need (``from fkal.acquisitions.registry import ACQUISITIONS``).
"""
