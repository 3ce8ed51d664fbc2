"""label_next.py end to end on folders of PNG files written from the real MNIST with a 100x bias (classes 5-9
together keep 1/100 of the images of classes 0-4): rounds, annotations back through a CSV and through a Label
Studio JSON export, bad annotations, resume, every acquisition, a torchvision model, given weights."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fkal.acquisitions.contract import QueryContext
from fkal.acquisitions.registry import REVEALS_LABELS
from fkal.acquisitions.fisher_kernel import fisher_kernel_query
from fkal.acquisitions.registry import ACQUISITIONS
from fkal.config import parse_config
from fkal.data import ALData, RawData, Split, TensorSource
from fkal.data.mnist import load_mnist
from fkal.labeling.cli import main as label_next
from fkal.labeling.project import Project
from fkal.run_state import generator
from fkal.models import lenet
from tools.mnist_folders import RARE, annotate, read_truth, simulate, write_folders

BUDGET = 20
FAST = ["--epochs", "2", "--unsup-epochs", "1", "--no-progress", "--budget", str(BUDGET)]


@pytest.fixture(scope="session")
def pngs(mnist_root, tmp_path_factory) -> Path:
    """pool/ (~300 images, 3 of classes 5-9), labeled/ (5 a class), val/ (15 a class), pool_truth.csv."""
    out = tmp_path_factory.mktemp("mnist_png")
    counts = write_folders(mnist_root, out, pool_size=600, ir=100, labeled_per_class=5, val_per_class=15, seed=0)
    assert counts["rare"] == int((counts["pool"] - counts["rare"]) / 100)
    return out


def _select(state: Path, pngs: Path, *extra: str, new: bool = True) -> int:
    args = ["select", "--state", str(state), *FAST, *extra]
    if new:
        args += ["--pool", str(pngs / "pool"), "--labeled", str(pngs / "labeled"), "--val", str(pngs / "val")]
    return label_next(args)


@pytest.fixture(scope="session")
def round1(pngs, tmp_path_factory) -> Path:
    """A state folder after round 1 of the default configuration (pfk-phat), no annotations merged."""
    state = tmp_path_factory.mktemp("template") / "state"
    assert _select(state, pngs) == 0
    return state


def _copy(state: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "state"
    shutil.copytree(state, dst)
    return dst


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _one_error_line(capsys, *words: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for w in words:
        assert w in err[0], err[0]
    return err[0]


def _mnist_source(mnist_root: Path, state: Path) -> tuple[TensorSource, list[dict], Project]:
    """The project's images taken from the MNIST tensors (not the PNG files), in images.csv order."""
    project = Project.load(state / "project.json")
    images = _rows(state / "images.csv")
    train = load_mnist(str(mnist_root), download=False).train
    idx = [int(Path(r["path"]).stem) for r in images]                 # the files are named by MNIST index
    labels = np.array([int(r["label"]) if r["label"] else -1 for r in images])    # the given labels (round 1)
    return TensorSource(train.images[idx], labels, project.mean, project.std), images, project


# ----------------------------------------------------------------------------------------------------------------
# Two rounds, annotations through a CSV and through a Label Studio export
# ----------------------------------------------------------------------------------------------------------------
def test_round_one_picks_are_the_fisher_kernel_query_on_the_same_images(round1, pngs, mnist_root):
    """Recomputed apart from the command: the images straight from the MNIST tensors, the split and the labels
    from images.csv, the model of round1/model.pt, the query's seeded generator."""
    source, images, project = _mnist_source(mnist_root, round1)
    assert project.model == "lenet" and project.acquisition == "pfk-phat-L80" and project.classes == list("0123456789")
    roles = np.array([r["role"] for r in images])
    cand, val = np.flatnonzero(roles != "val"), np.flatnonzero(roles == "val")
    x = source.images[torch.as_tensor(cand)].double() / 255                       # pool statistics (non-val)
    np.testing.assert_allclose(project.mean, [x.mean().item()], rtol=1e-6)
    np.testing.assert_allclose(project.std, [x.std(unbiased=False).item()], rtol=1e-5)
    split = Split(pool=cand, pool_labels=source.labels[cand], val=val, seed=0, imbalance_ratio=1.0)
    data = ALData(project.spec(len(cand), len(val), BUDGET, 80), RawData(source, source, source), split)
    model = lenet(10)
    model.load_state_dict(torch.load(round1 / "round1" / "model.pt")["models"][0])
    labeled = np.flatnonzero(source.labels[cand] >= 0)
    assert len(labeled) == 50 and (roles[cand[labeled]] == "labeled").all()
    ctx = QueryContext(models=[model.eval()], data=data, labeled=labeled,
                       unlabeled=np.flatnonzero(source.labels[cand] < 0), budget=BUDGET,
                       generator=generator(0, "query", 1), device=torch.device("cpu"),
                       config=parse_config("pfk-phat-L80", ACQUISITIONS), iteration=1, batch_size=500,
                       progress=False)
    result = fisher_kernel_query(ctx)
    rows = _rows(round1 / "round1" / "to_label.csv")
    assert [r["path"] for r in rows] == [images[i]["path"] for i in cand[result.indices]]
    np.testing.assert_allclose([float(r["score"]) for r in rows], result.scores, rtol=1e-5)
    with torch.no_grad():
        probs = model(source.get(cand[result.indices]))[0].softmax(1)
    assert [r["pseudo_label"] for r in rows] == [str(c) for c in probs.argmax(1).tolist()]
    np.testing.assert_allclose([float(r["probability"]) for r in rows], probs.max(1).values, atol=6e-5)
    assert [int(r["rank"]) for r in rows] == list(range(1, BUDGET + 1))


def test_round_files_agree_with_each_other(round1):
    d = round1 / "round1"
    rows = _rows(d / "to_label.csv")
    tasks = json.loads((d / "label_studio_tasks.json").read_text())
    config = ET.fromstring((d / "label_studio_config.xml").read_text())
    image, choices = config.find("Image"), config.find("Choices")
    assert [c.get("value") for c in choices.findall("Choice")] == list("0123456789")
    assert image.get("value") == "$" + image.get("name") and choices.get("toName") == image.get("name")
    record = json.loads((d / "round.json").read_text())
    assert len(tasks) == BUDGET
    for row, task in zip(rows, tasks):
        (result,) = task["predictions"][0]["result"]
        assert task["data"]["path"] == row["path"] and task["data"]["rank"] == int(row["rank"])
        assert result["from_name"] == choices.get("name") and result["to_name"] == image.get("name")
        assert result["value"]["choices"] == [row["pseudo_label"]]
        assert task["predictions"][0]["score"] == pytest.approx(float(row["probability"]), abs=1e-4)
        rel = task["data"]["image"].removeprefix("/data/local-files/?d=")
        assert Path(record["label_studio_root"], rel) == Path(row["path"])
    assert record["label_studio_storage"] == str(Path(rows[0]["path"]).parents[1])    # pool/, below the root
    sheet = Image.open(d / "contact_sheet.png")
    assert sheet.width >= 10 * 96 and sheet.height >= 2 * 96                   # 20 picks: two rows of ten
    assert record["budget"] == BUDGET and record["labeled"] == 50 and record["validation"] == 150
    assert sum(record["pseudo_label_counts"].values()) == BUDGET


def test_two_rounds_with_annotations_through_csv(round1, pngs, tmp_path, capsys):
    state = _copy(round1, tmp_path)
    truth = read_truth(pngs / "pool_truth.csv")
    rare1, n1 = annotate(truth, state / "round1" / "to_label.csv", tmp_path / "r1.csv")
    assert label_next(["merge", "--state", str(state), str(tmp_path / "r1.csv")]) == 0
    out = capsys.readouterr().out
    assert f"merged {BUDGET} labels into round 1 ({BUDGET} of its {BUDGET} picks)" in out
    labeled = _rows(state / "labeled.csv")
    merged = {r["path"]: r["label"] for r in labeled if r["round"] == "1"}
    picks1 = [r["path"] for r in _rows(state / "round1" / "to_label.csv")]
    assert merged == {p: truth[p] for p in picks1} and len(labeled) == 50 + BUDGET

    assert _select(state, pngs, new=False) == 0
    picks2 = [r["path"] for r in _rows(state / "round2" / "to_label.csv")]
    assert len(set(picks2)) == BUDGET and not set(picks2) & set(picks1) and set(picks2) <= set(truth)
    record = json.loads((state / "round2" / "round.json").read_text())
    assert record["labeled"] == 50 + BUDGET and record["unlabeled"] == len(truth) - BUDGET
    m1, m2 = (torch.load(state / f"round{n}" / "model.pt") for n in (1, 2))
    assert m2["labeled"] == 50 + BUDGET
    assert not torch.equal(m1["models"][0]["fc2.weight"], m2["models"][0]["fc2.weight"])      # trained further
    annotate(truth, state / "round2" / "to_label.csv", tmp_path / "r2.csv")
    assert label_next(["merge", "--state", str(state), str(tmp_path / "r2.csv")]) == 0
    assert len(_rows(state / "labeled.csv")) == 50 + 2 * BUDGET
    assert rare1 <= 3 and n1 == BUDGET
    capsys.readouterr()
    assert label_next(["status", "--state", str(state)]) == 0
    out = capsys.readouterr().out
    assert f"labeled set: {50 + 2 * BUDGET} images (50 given)" in out
    assert f"round 1: {state / 'round1' / 'to_label.csv'}; {BUDGET} annotations merged" in out and "round 2:" in out


def _label_studio_export(tasks: list[dict], truth: dict, skip: set[int], cancel: set[int]) -> list[dict]:
    """An export as Label Studio 1.23 writes it (Export > JSON), annotated with the true labels: the prediction
    accepted where it is right and fixed where it is wrong; tasks in ``skip`` unannotated, in ``cancel`` with a
    cancelled (skipped) annotation only."""
    out = []
    for i, task in enumerate(tasks, start=1):
        label = truth[task["data"]["path"]]
        pred = task["predictions"][0]
        anns = [] if i in skip else [{
            "id": i, "completed_by": 1, "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                                    "value": {"choices": [label]}}],
            "was_cancelled": i in cancel, "ground_truth": False, "lead_time": 3.2,
            "prediction": {"id": i, "result": pred["result"], "model_version": pred["model_version"],
                           "score": pred["score"], "task": i, "project": 1},
            "result_count": 1, "task": i, "project": 1, "parent_prediction": i, "parent_annotation": None}]
        out.append({"id": i, "annotations": anns, "drafts": [], "predictions": [i], "data": task["data"],
                    "meta": {}, "inner_id": i, "total_annotations": len(anns),
                    "cancelled_annotations": int(i in cancel), "total_predictions": 1, "project": 1})
    return out


def test_two_rounds_with_annotations_through_a_label_studio_export(round1, pngs, tmp_path, capsys):
    state = _copy(round1, tmp_path)
    truth = read_truth(pngs / "pool_truth.csv")
    picked = {}
    for n in (1, 2):
        if n == 2:
            assert _select(state, pngs, new=False) == 0
        tasks = json.loads((state / f"round{n}" / "label_studio_tasks.json").read_text())
        export = _label_studio_export(tasks, truth, skip={BUDGET}, cancel={3})
        (tmp_path / f"export{n}.json").write_text(json.dumps(export))
        capsys.readouterr()
        assert label_next(["merge", "--state", str(state), str(tmp_path / f"export{n}.json")]) == 0
        out = capsys.readouterr().out
        assert f"merged {BUDGET - 2} labels into round {n}" in out and "2 images without a label skipped" in out
        picked[n] = [t["data"]["path"] for t in tasks]
        merged = {r["path"]: r["label"] for r in _rows(state / "labeled.csv") if r["round"] == str(n)}
        assert merged == {p: truth[p] for i, p in enumerate(picked[n], start=1) if i not in (3, BUDGET)}
    # the two left unlabeled in round 1 may come back in round 2; the 18 labeled ones may not
    labeled1 = {p for i, p in enumerate(picked[1], start=1) if i not in (3, BUDGET)}
    assert not labeled1 & set(picked[2])
    assert len(_rows(state / "labeled.csv")) == 50 + 2 * (BUDGET - 2)


# ----------------------------------------------------------------------------------------------------------------
# Bad annotations: one error line, exit 2, nothing merged
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, words", [
    ("missing", ("unknown path", "nope.png")),
    ("validation", ("a validation image, outside the pool",)),
    ("given", ("one of the given labeled images, outside the pool",)),
    ("elsewhere", ("outside the pool (not one of the project's images)",)),
    ("label", ("unknown label name 'ten'",)),
    ("twice", ("annotated twice",)),
])
def test_a_bad_annotation_merges_nothing(round1, pngs, tmp_path, capsys, change, words):
    state = _copy(round1, tmp_path)
    truth = read_truth(pngs / "pool_truth.csv")
    annotate(truth, state / "round1" / "to_label.csv", tmp_path / "ann.csv")
    lines = (tmp_path / "ann.csv").read_text().splitlines()
    path, label = lines[5].split(",")
    bad = {"missing": f"{pngs / 'pool' / 'nope.png'},{label}",
           "validation": f"{next((pngs / 'val' / '7').iterdir())},7",
           "given": f"{next((pngs / 'labeled' / '2').iterdir())},2",
           "elsewhere": f"{tmp_path / 'x.png'},{label}", "label": f"{path},ten"}.get(change)
    Image.new("L", (28, 28)).save(tmp_path / "x.png")
    if change == "twice":
        lines.append(lines[5])
    else:
        lines[5] = bad
    (tmp_path / "ann.csv").write_text("\n".join(lines) + "\n")
    before = (state / "labeled.csv").read_bytes()
    capsys.readouterr()
    assert label_next(["merge", "--state", str(state), str(tmp_path / "ann.csv")]) == 2
    _one_error_line(capsys, "ann.csv:", *words)
    assert (state / "labeled.csv").read_bytes() == before


def test_a_second_merge_of_the_same_labels_is_a_duplicate(round1, pngs, tmp_path, capsys):
    state = _copy(round1, tmp_path)
    annotate(read_truth(pngs / "pool_truth.csv"), state / "round1" / "to_label.csv", tmp_path / "ann.csv")
    assert label_next(["merge", "--state", str(state), str(tmp_path / "ann.csv")]) == 0
    before = (state / "labeled.csv").read_bytes()
    capsys.readouterr()
    assert label_next(["merge", "--state", str(state), str(tmp_path / "ann.csv")]) == 2
    _one_error_line(capsys, "already labeled (merged in round 1)")
    assert (state / "labeled.csv").read_bytes() == before


# ----------------------------------------------------------------------------------------------------------------
# Refusals, resume
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, words", [
    ("galaxy", ("galaxy reveals each pick's label",)),
    ("direct-L80", ("direct reveals each pick's label",)),
    ("pfk-y-L80", ("pseudo-label y",)),
    ("similar", ("SIMILAR's Fisher kernel", "similar-phat", "--similar-kernel cosine")),
])
def test_acquisitions_that_need_unknown_labels_are_refused(pngs, tmp_path, capsys, name, words):
    assert REVEALS_LABELS == {"galaxy", "direct"}
    assert _select(tmp_path / "state", pngs, "--acquisition", name) == 2
    _one_error_line(capsys, *words)
    assert not (tmp_path / "state" / "project.json").exists()


def test_a_round_waits_for_its_annotations(round1, pngs, tmp_path, capsys):
    state = _copy(round1, tmp_path)
    capsys.readouterr()
    assert _select(state, pngs, new=False) == 2
    _one_error_line(capsys, "round 1 waits for its annotations", "merge")
    assert not (state / "round2").exists()


def test_a_missing_gpu_is_one_error_line_before_anything_is_written(pngs, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)         # the same answer on a GPU machine
    capsys.readouterr()
    assert _select(tmp_path / "state", pngs, "--gpu", "0") == 2
    _one_error_line(capsys, "--gpu 0: no CUDA device is visible here", "--allow-cpu-fallback")
    assert not (tmp_path / "state").exists()


def test_a_killed_round_resumes_from_its_last_saved_step(round1, pngs, tmp_path):
    state = _copy(round1, tmp_path)
    d = state / "round1"
    want = (d / "to_label.csv").read_bytes()
    stamps = {f: (d / f).stat().st_mtime_ns for f in ("model.pt", "picks.npz")}
    for f in ("round.json", "to_label.csv", "label_studio_tasks.json", "contact_sheet.png"):
        (d / f).unlink()                                  # killed while writing the files
    assert _select(state, pngs, new=False) == 0
    assert (d / "to_label.csv").read_bytes() == want
    assert {f: (d / f).stat().st_mtime_ns for f in stamps} == stamps     # neither trained nor queried again
    (d / "round.json").unlink()
    (d / "picks.npz").unlink()                            # killed during the query
    assert _select(state, pngs, new=False) == 0
    assert (d / "to_label.csv").read_bytes() == want and (d / "model.pt").stat().st_mtime_ns == stamps["model.pt"]


def test_later_rounds_keep_the_project_settings(round1, pngs, tmp_path, capsys):
    state = _copy(round1, tmp_path)
    annotate(read_truth(pngs / "pool_truth.csv"), state / "round1" / "to_label.csv", tmp_path / "a.csv")
    assert label_next(["merge", "--state", str(state), str(tmp_path / "a.csv")]) == 0
    capsys.readouterr()
    assert _select(state, pngs, "--epochs", "3", new=False) == 2
    _one_error_line(capsys, "--epochs 3 differs from this project's 2")
    assert _select(state, pngs, "--acquisition", "pfk-phat-L80", new=False) == 0     # the same, spelled out


# ----------------------------------------------------------------------------------------------------------------
# Every acquisition of the registry; other models; given weights
# ----------------------------------------------------------------------------------------------------------------
CONFIGS = {"random": "random", "pcc": "pcc", "pfk": "pfk-phat", "pfk-sum": "pfk-sum-phat", "varR": "varR-K4",
           "entropy": "entropy-K4", "bald": "bald-E2-K2", "std": "std-K4", "coreset": "coreset", "vaal": "vaal",
           "tavaal": "tavaal", "lloss": "lloss", "lloss-v2": "lloss-v2", "similar": "similar-phat",
           "typiclust": "typiclust", "badge": "badge", "base": "base", "pfk-base": "pfk-base-phat"}


def test_every_acquisition_is_covered():
    assert set(CONFIGS) == set(ACQUISITIONS) - REVEALS_LABELS


@pytest.mark.parametrize("acquisition", sorted(CONFIGS))
def test_every_acquisition_makes_a_round(round1, pngs, mnist_root, tmp_path, acquisition):
    state = tmp_path / "state"
    state.mkdir()
    for folder in ("cache", "initial"):       # the same images and the same initial model (seed 0): made once
        shutil.copytree(round1 / folder, state / folder)
    extra = []
    if acquisition in ("vaal", "tavaal"):     # a small VAE and discriminator, two iterations
        extra = ["--vaal-iterations", "2", "--tavaal-iterations", "2", "--vaal-width", "4", "--vaal-latent", "4",
                 "--vaal-disc-hidden", "8", "--vaal-batch", "16"]
    assert _select(state, pngs, "--acquisition", CONFIGS[acquisition], *extra) == 0
    images = _rows(state / "images.csv")
    picks = [r["path"] for r in _rows(state / "round1" / "to_label.csv")]
    pool = [r["path"] for r in images if r["role"] == "pool"]
    assert len(set(picks)) == BUDGET and set(picks) <= set(pool)
    if acquisition == "random":                       # uniform over the unlabeled pool with the query's generator
        cand = [r["path"] for r in images if r["role"] != "val"]
        unlabeled = [i for i, r in enumerate(images) if r["role"] == "pool"]
        order = torch.randperm(len(unlabeled), generator=generator(0, "query", 1))[:BUDGET]
        assert picks == [cand[unlabeled[i]] for i in order.tolist()]
        assert all(r["score"] == "" for r in _rows(state / "round1" / "to_label.csv"))
    if acquisition == "typiclust":                    # on the features of the initial model, not the trained one
        from fkal.acquisitions.coreset import penultimate_features
        from fkal.acquisitions.typiclust import typiclust
        source, images, _ = _mnist_source(mnist_root, state)
        roles = np.array([r["role"] for r in images])
        cand = np.flatnonzero(roles != "val")
        model = lenet(10)
        model.load_state_dict(torch.load(state / "initial" / "member0.pt")["model"])
        feats = penultimate_features(model.eval(), source, cand, torch.device("cpu"), 500)
        want, scores = typiclust(feats, roles[cand] == "labeled", BUDGET, generator(0, "query", 1))
        assert picks == [images[i]["path"] for i in cand[want]]
        np.testing.assert_allclose([float(r["score"]) for r in _rows(state / "round1" / "to_label.csv")], scores,
                                   rtol=1e-5)


def test_a_torchvision_architecture_by_name(pngs, tmp_path):
    state = tmp_path / "state"
    assert _select(state, pngs, "--model", "mobilenet_v3_small", "--image-size", "32", "--pretrain", "none",
                   "--epochs", "1") == 0
    project = Project.load(state / "project.json")
    assert project.model == "torchvision:mobilenet_v3_small:classifier.2:32" and project.channels == 3
    assert project.acquisition == "pfk-phat-L1024"                 # L: the width of the default tap
    assert len({r["path"] for r in _rows(state / "round1" / "to_label.csv")}) == BUDGET
    assert torch.load(state / "initial" / "member0.pt")["kind"] == "none"


def test_layers_name_the_taps_of_a_torchvision_architecture_only():
    from fkal.errors import UserError
    from fkal.labeling.rounds import resolve_model
    tv = resolve_model("torchvision:resnet18", "layer2, layer4", 32)        # resnet18 alone is the project's
    assert tv == ("torchvision:resnet18:layer2+layer4:32", "torchvision", 32)
    assert resolve_model("resnet34", None, 32)[0] == "torchvision:resnet34:layer3+layer4:32"
    assert resolve_model("resnet18-small", None, None) == ("resnet18-small", "resnet18-small", 32)
    with pytest.raises(UserError, match="chooses the taps of a torchvision architecture"):
        resolve_model("lenet", "conv1", None)
    with pytest.raises(UserError, match="has no layer named layer7"):
        resolve_model("resnet34", "layer7", 32)


def test_the_release_taps_need_a_model_that_has_them(round1, pngs, tmp_path, capsys):
    """--taps post (run.py's option, the release's taps after the ReLU) is kept for LeNet and changes its picks;
    a torchvision architecture takes its taps where its layers give them, so it is refused before anything is
    written."""
    capsys.readouterr()
    assert _select(tmp_path / "tv", pngs, "--model", "mobilenet_v3_small", "--image-size", "32", "--pretrain",
                   "none", "--taps", "post") == 2
    _one_error_line(capsys, "--taps post", "leave --taps out")
    assert not (tmp_path / "tv" / "project.json").exists()
    state = tmp_path / "post"
    state.mkdir()
    for folder in ("cache", "initial"):                   # the same images and initial model as round1
        shutil.copytree(round1 / folder, state / folder)
    assert _select(state, pngs, "--taps", "post") == 0
    assert Project.load(state / "project.json").options["taps"] == "post"
    pre = _rows(round1 / "round1" / "to_label.csv")
    post = _rows(state / "round1" / "to_label.csv")
    assert len(post) == BUDGET and [r["score"] for r in post] != [r["score"] for r in pre]     # the query saw it


def test_given_weights_and_a_validation_share(round1, pngs, tmp_path, capsys):
    weights = tmp_path / "lenet.pt"
    torch.save(torch.load(round1 / "round1" / "model.pt")["models"][0], weights)
    state = tmp_path / "state"
    assert label_next(["select", "--state", str(state), *FAST, "--pool", str(pngs / "pool"), "--labeled",
                       str(pngs / "labeled"), "--weights", str(weights), "--acquisition", "random"]) == 0
    initial = torch.load(state / "initial" / "member0.pt")
    assert initial["kind"] == "weights"
    for k, v in torch.load(weights).items():
        torch.testing.assert_close(initial["model"][k], v)
    roles = [r["role"] for r in _rows(state / "images.csv")]
    assert roles.count("val") == 10 and roles.count("labeled") == 40         # 20% of 5 a class: 1 a class
    bad = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, bad)
    capsys.readouterr()
    assert label_next(["select", "--state", str(tmp_path / "other"), *FAST, "--pool", str(pngs / "pool"),
                       "--labeled", str(pngs / "labeled"), "--weights", str(bad)]) == 2
    _one_error_line(capsys, "does not fit the model lenet")
    assert not (tmp_path / "other" / "project.json").exists()


def test_the_simulated_annotator_counts_the_rare_picks_of_each_round(round1, pngs, tmp_path):
    """tools/mnist_folders.py simulate (the README's measurement): select, annotate from the truth, merge."""
    state = tmp_path / "runs" / "pfk-phat-seed0"
    state.mkdir(parents=True)
    for folder in ("cache", "initial"):                   # the same images and initial model (seed 0)
        shutil.copytree(round1 / folder, state / folder)
    rows = simulate(pngs, tmp_path / "runs", ["pfk-phat"], rounds=2, budget=BUDGET, seeds=[0],
                    extra=["--epochs", "1", "--no-progress"])
    truth = read_truth(pngs / "pool_truth.csv")
    assert [(r["acquisition"], r["round"], r["picks"]) for r in rows] == [("pfk-phat-L80", n, BUDGET) for n in (1, 2)]
    for r in rows:
        picks = [x["path"] for x in _rows(state / f"round{r['round']}" / "to_label.csv")]
        assert r["rare"] == sum(truth[p] in RARE for p in picks)
    merged = [x for x in _rows(state / "labeled.csv") if x["round"] != "0"]
    assert len(merged) == 2 * BUDGET and all(x["label"] == truth[x["path"]] for x in merged)


def test_help_explains_every_file():
    proc = subprocess.run([sys.executable, "label_next.py", "--help"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0
    text = proc.stdout
    for name in ("to_label.csv", "label_studio_tasks.json", "label_studio_config.xml", "contact_sheet.png",
                 "round.json", "project.json", "images.csv", "labeled.csv", "model.pt", "picks.npz", "cache/",
                 "initial/"):
        assert name in text, name
    assert RARE == ("5", "6", "7", "8", "9")
