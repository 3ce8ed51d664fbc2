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
from fkal.loop import run_config, run_initial
from fkal.run_state import RunPaths, Settings

TIMINGS = ("query_seconds", "train_seconds")


def settings(out, iterations: int) -> Settings:
    spec = DATASETS["mnist"]
    return Settings(out=out, spec=spec, train=spec.train.with_epochs(2), unsup=spec.unsup.with_epochs(1),
                    query_size=10, iterations=iterations, device=torch.device("cpu"), train_size=400, val_size=100,
                    eval_batch=128, progress=False, options=(("lloss_subset", 40),))


def same_weights(a: dict, b: dict) -> bool:
    """Two state dicts with the same names and bitwise equal tensors."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def copied(model: torch.nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


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
            assert same_weights(mx, my), b
    # the iterations after the interruption changed the weights they resumed from
    one, three = saved(first, cfg, 1)["models"][0], saved(first, cfg, 3)["models"][0]
    assert not torch.equal(one["fc2.weight" if "fc2.weight" in one else "backbone.fc2.weight"],
                           three["fc2.weight" if "fc2.weight" in three else "backbone.fc2.weight"])
    assert np.isfinite([r["test_accuracy"] for r in resumed]).all()


def test_run_paths_name_every_file(tmp_path):
    p = RunPaths.of(tmp_path, DATASETS["mnist"], 3)
    assert p.root == tmp_path / "MNIST" / "run3" and p.results == p.root / "results.jsonl"
    assert p.ir(4.0) == p.root / "ir4" and p.ir(1.5) == p.root / "ir1.5"
    assert p.split(4.0) == p.root / "ir4" / "split.npz" and p.initial_info(4.0) == p.root / "ir4" / "initial.json"
    assert p.initial(4.0, 0) == p.root / "ir4" / "init_random.pt"
    assert p.initial(4.0, 1) == p.root / "ir4" / "init_rotation.pt"
    assert p.initial(4.0, 1, 2) == p.root / "ir4" / "init_rotation_e2.pt"
    assert p.state(4.0, 1, "pfk-phat-L80", 3) == p.root / "ir4" / "rotation" / "pfk-phat-L80" / "state_b03.pt"
    assert p.state(4.0, 0, "random", 12) == p.root / "ir4" / "random" / "random" / "state_b12.pt"


def test_seeds_by_their_definition():
    import zlib
    from fkal.run_state import derive_seed, generator
    want = int(np.random.SeedSequence([5, zlib.crc32(b"query"), 2]).generate_state(2, dtype=np.uint64)[0]) // 2
    assert derive_seed(5, "query", 2) == want and 0 <= want < 2 ** 63
    first = torch.randint(2 ** 62, (3,), generator=generator(5, "query", 2))
    assert torch.equal(first, torch.randint(2 ** 62, (3,), generator=torch.Generator().manual_seed(want)))
    assert not torch.equal(first, torch.randint(2 ** 62, (3,), generator=generator(5, "train", 2)))
    assert not torch.equal(first, torch.randint(2 ** 62, (3,), generator=generator(5, "query", 3)))
    by_run = settings("out", 1)                                   # a run's seed: its index, or --seed for all
    assert [by_run.seed_of(r) for r in (0, 3)] == [0, 3]
    assert [replace(by_run, seed=7).seed_of(r) for r in (0, 3)] == [7, 7]


def test_initial_models_and_full_train_record(tiny_mnist, tmp_path, monkeypatch):
    import fkal.loop
    from fkal.io import read_jsonl
    from fkal.loop import run_full_train
    raw = load_mnist(str(tiny_mnist), download=False)
    s = settings(tmp_path, 1)
    run_initial(s, raw, 0, 4.0)
    paths = RunPaths.of(tmp_path, s.spec, 0)
    assert {f.name for f in paths.ir(4.0).iterdir()} == {"split.npz", "init_random.pt", "init_rotation.pt",
                                                          "initial.json", paths.initial_lock(4.0).name}
    saved0, saved1 = (torch.load(paths.initial(4.0, u), map_location="cpu") for u in (0, 1))
    assert (saved0["unsupervised"], saved1["unsupervised"], saved0["member"]) == (0, 1, 0)
    rnd, rot = saved0["model"], saved1["model"]
    assert torch.equal(rnd["fc2.weight"], rot["fc2.weight"]) and not torch.equal(rnd["conv1.weight"],
                                                                                   rot["conv1.weight"])
    run_initial(s, raw, 0, 4.0, members=2)                                 # a second member, its own weights
    second = torch.load(paths.initial(4.0, 0, 1), map_location="cpu")
    assert second["member"] == 1 and not torch.equal(second["model"]["fc2.weight"], rnd["fc2.weight"])
    assert paths.initial(4.0, 1, 1).exists()
    start, real_train = [], fkal.loop.train                    # the weights each full train starts from
    monkeypatch.setattr(fkal.loop, "train", lambda model, *a, **k: start.append(model.state_dict()["conv1.weight"]
                                                                                .clone()) or real_train(model, *a, **k))
    record = run_full_train(s, raw, 0, 4.0, 0)
    split = np.load(paths.split(4.0))
    pool = split["pool"]
    assert record["iteration"] == 0 and record["config"] == "full-train" and record["query_size"] == 0
    assert record["labeled"] == record["pool_size"] == len(pool)
    assert record["selected_class_counts"] == np.bincount(raw.train.labels[pool], minlength=10).tolist()
    assert 0 <= record["test_accuracy"] <= 100 and len(record["per_class_accuracy"]) == 10
    assert run_full_train(s, raw, 0, 4.0, 0) == record                     # done: read back, not trained again
    assert len(read_jsonl(paths.results)[0]) == 1
    assert run_full_train(s, raw, 0, 4.0, 1)["unsupervised"] == 1          # from the rotation-pretrained model
    assert len(start) == 2 and torch.equal(start[0], rnd["conv1.weight"]) and torch.equal(start[1], rot["conv1.weight"])


def test_full_train_on_a_fresh_run_folder_makes_its_split_and_initial_model(tiny_mnist, tmp_path):
    from fkal.loop import run_full_train
    raw = load_mnist(str(tiny_mnist), download=False)
    s = settings(tmp_path, 1)
    record = run_full_train(s, raw, 0, 4.0, 0)
    paths = RunPaths.of(tmp_path, s.spec, 0)
    assert paths.split(4.0).exists() and paths.initial(4.0, 0).exists()
    assert record["labeled"] == len(np.load(paths.split(4.0))["pool"])


def test_a_finished_configuration_is_read_back_without_its_states(tiny_mnist, tmp_path, monkeypatch):
    import fkal.loop
    raw = load_mnist(str(tiny_mnist), download=False)
    cfg = parse_config("random", ACQUISITIONS)
    s = settings(tmp_path, 2)
    run_initial(s, raw, 0, 4.0)
    records = run_config(s, raw, cfg, 0, 4.0, 0)

    def refuse(*args, **kwargs):
        raise AssertionError("a finished configuration loads no saved state and trains nothing")
    monkeypatch.setattr(fkal.loop, "load_state", refuse)
    monkeypatch.setattr(fkal.loop, "train", refuse)
    assert run_config(s, raw, cfg, 0, 4.0, 0) == records


def test_rotation_pretraining_starts_from_its_own_seeds(tiny_mnist, tmp_path, monkeypatch):
    """Each member's rotation model starts from the weights of ``derive_seed(seed, "rotation", member)`` and reads
    the pool in the order of ``generator(seed, "rotation-order", member)``; the random-weights model from
    ``derive_seed(seed, "init", member)``. Recomputed here from those definitions."""
    import fkal.training
    from fkal.data import ALData
    from fkal.loop import ensure_initial
    from fkal.run_state import derive_seed, ensure_split, generator, new_model
    raw = load_mnist(str(tiny_mnist), download=False)
    s = settings(tmp_path, 1)
    seen = {}

    def recorded(rot, source, pool, unsup, device, order, desc, progress):
        seen[desc] = (copied(rot), order.get_state())
        return 0.0
    monkeypatch.setattr(fkal.training, "train_rotation", recorded)     # what fkal.training.initial_model calls
    data = ALData(s.spec, raw, ensure_split(s, raw, 3, 4.0))
    for member in (0, 1):
        ensure_initial(s, data, 3, 1, member)
        start, order = seen[f"run3 IR=4 rotation pretraining e{member}"]
        torch.manual_seed(derive_seed(3, "rotation", member))
        assert same_weights(start, new_model(s, num_classes=4).state_dict())
        assert torch.equal(order, generator(3, "rotation-order", member).get_state())
        ensure_initial(s, data, 3, 0, member)
        torch.manual_seed(derive_seed(3, "init", member))
        got = torch.load(RunPaths.of(tmp_path, s.spec, 3).initial(4.0, 0, member), map_location="cpu")["model"]
        assert same_weights(got, new_model(s).state_dict())
    assert len(seen) == 2


def test_the_pretrained_model_a_query_gets_is_the_runs_rotation_initial_model(tiny_mnist, tmp_path, monkeypatch):
    """A configuration that starts from random weights still hands its acquisition the run's rotation-pretrained
    model (``ctx.pretrained``, TypiClust's features); made on demand, it is the file ``run_initial`` makes."""
    raw = load_mnist(str(tiny_mnist), download=False)
    random_query = ACQUISITIONS["random"]
    handed = []

    def wants_pretrained(ctx):
        handed.append(copied(ctx.pretrained()))
        return random_query(ctx)
    monkeypatch.setitem(ACQUISITIONS, "needspretrained", wants_pretrained)
    cfg = parse_config("needspretrained", ACQUISITIONS)
    on_demand, ahead = settings(tmp_path / "on-demand", 1), settings(tmp_path / "ahead", 1)
    run_config(on_demand, raw, cfg, 0, 4.0, 0)                  # random-weights start: no rotation model yet
    run_initial(ahead, raw, 0, 4.0)
    made, want = (torch.load(RunPaths.of(x.out, x.spec, 0).initial(4.0, 1), map_location="cpu")
                  for x in (on_demand, ahead))
    assert {k: v for k, v in made.items() if k != "model"} == {k: v for k, v in want.items() if k != "model"}
    assert made["unsupervised"] == 1 and same_weights(made["model"], want["model"])
    assert len(handed) == 1 and same_weights(handed[0], want["model"])
