"""An interrupted run, resumed, equals the run that was never interrupted: the records (timings aside), the
labeled history and the weights of every iteration's saved state. Through ``fkal.loop`` directly, on tiny data."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from fkal.acquisitions.registry import ACQUISITIONS
from fkal.config import parse_config
from fkal.data import DATASETS
from fkal.data.mnist import load_mnist
from fkal.loop import RunPaths, Settings, run_config, run_initial

TIMINGS = ("query_seconds", "train_seconds")


def settings(out, iterations: int) -> Settings:
    spec = DATASETS["mnist"]
    return Settings(out=out, spec=spec, train=spec.train.with_epochs(2), unsup=spec.unsup.with_epochs(1),
                    query_size=10, iterations=iterations, device=torch.device("cpu"), pool_size=400, val_size=100,
                    eval_batch=128, progress=False, options=(("lloss_subset", 40),))


def saved(s: Settings, cfg, b: int) -> dict:
    return torch.load(RunPaths.of(s.out, s.spec, 0).state(4.0, 0, cfg.name, b), map_location="cpu")


@pytest.mark.parametrize("name", ["random", "pfk-phat-L80", "lloss"])
def test_resumed_run_equals_the_uninterrupted_run(tiny_mnist, tmp_path, name):
    raw = load_mnist(str(tiny_mnist), download=False)
    cfg = parse_config(name, ACQUISITIONS)
    whole = settings(tmp_path / "whole", 3)
    run_initial(whole, raw, 0, 4.0)
    straight = run_config(whole, raw, cfg, 0, 4.0, 0)

    first = settings(tmp_path / "resumed", 1)                               # stopped after iteration 1
    run_initial(first, raw, 0, 4.0)
    run_config(first, raw, cfg, 0, 4.0, 0)
    resumed = run_config(replace(first, iterations=3), raw, cfg, 0, 4.0, 0)

    assert [r["iteration"] for r in resumed] == [1, 2, 3]
    for a, b in zip(straight, resumed):
        assert {k: v for k, v in a.items() if k not in TIMINGS} == {k: v for k, v in b.items() if k not in TIMINGS}
    for b in (1, 2, 3):
        x, y = saved(whole, cfg, b), saved(first, cfg, b)
        assert torch.equal(x["labeled_at"], y["labeled_at"])
        assert x["labeled_at"].max() == b and int((x["labeled_at"] >= 0).sum()) == 10 * b
        for mx, my in zip(x["models"], y["models"]):
            assert mx.keys() == my.keys()
            for k in mx:
                assert torch.equal(mx[k], my[k]), (b, k)
    # the iterations after the interruption changed the weights they resumed from
    one, three = saved(first, cfg, 1)["models"][0], saved(first, cfg, 3)["models"][0]
    assert not torch.equal(one["fc2.weight" if "fc2.weight" in one else "backbone.fc2.weight"],
                           three["fc2.weight" if "fc2.weight" in three else "backbone.fc2.weight"])
    assert np.isfinite([r["test_accuracy"] for r in resumed]).all()
