"""Resume reuses only what was made with the same settings; records carry them; epoch selection on D_v; one
process per configuration; appends after a torn line; damaged files are one clear error."""
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import fkal
from fkal.cli import main
from fkal.io import append_jsonl, exclusive, read_jsonl
from fkal.errors import UserError
from fkal.settings import settings_id


def common(root, out, *extra):
    return ["--data-root", str(root), "--out", str(out), "--run-stop", "1", "--imbalance-ratios", "4",
            "--train-size", "400", "--val-size", "100", "--unsup-epochs", "1", "--epochs", "2", "--iterations", "2",
            "--pool-size", "10", "--no-progress", "--eval-batch", "128", *extra]


def results_of(out):
    return read_jsonl(out / "MNIST" / "run0" / "results.jsonl")


def code_version_of_this_checkout():
    """``git describe --always --dirty`` of the package's folder, as run by hand; None outside git."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=Path(fkal.__file__).parent,
                             capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def test_records_carry_settings_metrics_and_epoch_selection(tiny_mnist, tmp_path, monkeypatch):
    monkeypatch.setattr("fkal.loop._CODE_VERSION", [])         # asked anew, not the answer an earlier test kept
    out = tmp_path / "out"
    assert main(common(tiny_mnist, out, "--only", "random", "--epoch-selection", "val")) == 0
    records, warnings = results_of(out)
    assert not warnings and len(records) == 2
    for r in records:
        s = r["settings"]
        assert (s["query_size"], s["train"]["epochs"], s["train_size"], s["val_size"], s["seed"]) == (10, 2, 400, 100, 0)
        assert s["world_size"] == 1                             # one process (tests/test_distributed.py: two)
        assert r["code_version"] == code_version_of_this_checkout()
        assert s["epoch_selection"] == "val" and set(s["data"]) == {"train", "test"} and s["unsupervised"] == 1
        assert r["epoch_selection"] == "val" and len(r["chosen_epochs"]) == 1 and 1 <= r["chosen_epochs"][0] <= 2
        assert 0 <= r["final_test_accuracy"] <= 100 and 0 <= r["val_accuracy"] <= 100
        assert r["balanced_accuracy"] == pytest.approx(np.mean(r["per_class_accuracy"]))
        assert r["worst_class_accuracy"] == pytest.approx(min(r["per_class_accuracy"]))
        assert r["rare_classes"] == [5, 6, 7, 8, 9] and r["labeled_min_class_count"] <= r["labeled_max_class_count"]
    folder = out / "MNIST" / "run0" / "ir4" / "rotation" / "random"
    assert json.loads((folder / "settings.json").read_text())["settings_id"] == records[0]["settings_id"]


def test_val_selection_keeps_the_best_epoch_on_the_validation_set(tiny_mnist, tmp_path, monkeypatch):
    """The kept model is the epoch with the best D_v accuracy, and the next iteration starts from it."""
    import fkal.loop as loop
    scores = iter([30.0, 70.0, 50.0, 20.0, 60.0, 60.0])      # iteration 1: epochs 1-3; iteration 2: epochs 1-3
    monkeypatch.setattr(loop, "_accuracy", lambda s, model, source, idx, labels: next(scores))
    out = tmp_path / "out"
    assert main(common(tiny_mnist, out, "--only", "random", "--epoch-selection", "val", "--epochs", "3")) == 0
    records, _ = results_of(out)
    assert [r["chosen_epochs"] for r in records] == [[2], [2]]        # ties keep the earlier epoch
    assert [r["val_accuracy"] for r in records] == [70.0, 60.0]


def test_resume_with_other_settings_is_one_clear_error_and_fresh_starts_afresh(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(common(tiny_mnist, out, "--only", "random")) == 0
    before = (out / "MNIST" / "run0" / "results.jsonl").read_bytes()
    capsys.readouterr()
    assert main(common(tiny_mnist, out, "--only", "random", "--epochs", "3")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--epochs: 2 there, 3 now" in err
    assert err.endswith(": use another --out, or the settings it was made with, or add --fresh random to start "
                        "that configuration afresh (the old folder is kept beside it)")
    assert (out / "MNIST" / "run0" / "results.jsonl").read_bytes() == before          # nothing written
    # the split serves every configuration: another --train-size is refused for any of them
    assert main(common(tiny_mnist, out, "--only", "pcc-L20", "--train-size", "300")) == 2
    assert "--train-size: 400 there, 300 now" in capsys.readouterr().err
    # --fresh moves the old folder aside and keeps both sets of records apart
    assert main(common(tiny_mnist, out, "--only", "random", "--epochs", "3", "--fresh", "random")) == 0
    records, _ = results_of(out)
    assert len(records) == 4 and len({r["settings_id"] for r in records}) == 2
    kinds = out / "MNIST" / "run0" / "ir4" / "rotation"
    assert sorted(p.name.split("-")[0] for p in kinds.iterdir() if not p.name.startswith(".")) == ["random", "random.replaced"]
    # states without settings.json (saved before settings were recorded) are refused until --fresh moves them
    (kinds / "random" / "settings.json").unlink()
    capsys.readouterr()
    assert main(common(tiny_mnist, out, "--only", "random", "--epochs", "3")) == 2
    assert capsys.readouterr().err == (
        f"error: {kinds / 'random'} holds iteration states but no settings.json to compare this run's settings with "
        "(made before settings were recorded, or the file was removed): add --fresh random to start that "
        "configuration afresh (the old folder is kept beside it)\n")
    assert main(common(tiny_mnist, out, "--only", "random", "--epochs", "3", "--fresh", "random")) == 0
    unrecorded = settings_id({"recorded": "nothing (made before settings were recorded)"})
    assert (kinds / f"random.replaced-{unrecorded}").is_dir() and (kinds / "random" / "settings.json").exists()


def test_more_iterations_extend_a_run_with_the_same_settings(tiny_mnist, tmp_path):
    out = tmp_path / "out"
    assert main(common(tiny_mnist, out, "--only", "random")) == 0
    assert main(common(tiny_mnist, out, "--only", "random", "--iterations", "3")) == 0
    records, _ = results_of(out)
    assert [r["iteration"] for r in records] == [1, 2, 3] and len({r["settings_id"] for r in records}) == 1


def test_a_budget_larger_than_the_pool_is_refused_before_anything_is_written(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(common(tiny_mnist, out, "--only", "random", "--pool-size", "1000")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "2000 pool images" in err and "--pool-size" in err
    assert not out.exists()


def test_a_second_process_on_the_same_configuration_stops(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "out"
    lock = out / "MNIST" / "run0" / "ir4" / "rotation" / ".random.lock"
    with exclusive(lock, "held by the test"):              # as if another process ran random on run0 IR=4
        assert main(common(tiny_mnist, out, "--only", "random")) == 2
        err = capsys.readouterr().err
        assert "being run by another process" in err and len(err.strip().splitlines()) == 1
        assert main(common(tiny_mnist, out, "--only", "pcc-L20")) == 0      # another configuration runs


def test_append_after_a_torn_line_moves_it_aside_and_keeps_the_file_valid_json_lines(tmp_path):
    """The fragment a crash left goes, bytes unchanged, to results.jsonl.torn-1 beside the file (torn-2 the next
    time); the file stays valid JSON Lines, every line an object, as pandas and jq read it."""
    path = tmp_path / "results.jsonl"
    assert append_jsonl({"a": 1}, path) is None
    with open(path, "ab") as f:
        f.write(b'{"b": 2, "cut sho')                   # a crash in the middle of an append
    assert append_jsonl({"c": 3}, path) == tmp_path / "results.jsonl.torn-1"
    assert (tmp_path / "results.jsonl.torn-1").read_bytes() == b'{"b": 2, "cut sho'
    assert path.read_bytes() == b'{"a": 1}\n{"c": 3}\n'
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"a": 1}, {"c": 3}]
    assert append_jsonl({"d": 4}, path) is None
    with open(path, "ab") as f:
        f.write(b"no newline at all")
    assert append_jsonl({"e": 5}, path) == tmp_path / "results.jsonl.torn-2"
    records, warnings = read_jsonl(path)
    assert records == [{"a": 1}, {"c": 3}, {"d": 4}, {"e": 5}] and not warnings
    only = tmp_path / "only.jsonl"
    only.write_bytes(b'{"half')                         # a file holding nothing but a torn line
    assert append_jsonl({"f": 6}, only) == tmp_path / "only.jsonl.torn-1"
    assert only.read_bytes() == b'{"f": 6}\n'


def test_a_damaged_state_is_one_error_and_deleting_it_resumes_from_the_one_before(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(common(tiny_mnist, out, "--only", "random", "--iterations", "2")) == 0
    folder = out / "MNIST" / "run0" / "ir4" / "rotation" / "random"
    state = folder / "state_b02.pt"
    state.write_bytes(state.read_bytes()[:100])                           # truncated
    assert main(common(tiny_mnist, out, "--only", "random", "--iterations", "3")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "state_b02.pt" in err and "delete it" in err
    state.unlink()
    assert main(common(tiny_mnist, out, "--only", "random", "--iterations", "3")) == 0
    records, _ = results_of(out)
    by_iteration = {}
    for r in records:
        by_iteration.setdefault(r["iteration"], []).append(r)
    assert sorted(by_iteration) == [1, 2, 3] and len(by_iteration[2]) == 2       # iteration 2 redone
    a, b = by_iteration[2]
    assert a["selected_class_counts"] == b["selected_class_counts"] and a["test_accuracy"] == b["test_accuracy"]


def test_a_damaged_initial_model_is_one_error(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--initial"] + common(tiny_mnist, out)) == 0
    (out / "MNIST" / "run0" / "ir4" / "init_rotation.pt").write_bytes(b"not a checkpoint")
    capsys.readouterr()
    assert main(common(tiny_mnist, out, "--only", "random")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "init_rotation.pt" in err and "made anew" in err


def test_checkpoints_load_with_weights_only(tiny_mnist, tmp_path):
    """A checkpoint that would run code when unpickled is refused, not executed."""
    out = tmp_path / "out"
    assert main(["--initial"] + common(tiny_mnist, out)) == 0
    path = out / "MNIST" / "run0" / "ir4" / "init_rotation.pt"

    class Evil:
        def __reduce__(self):
            return (exec, ("import pathlib; pathlib.Path('%s').write_text('ran')" % (tmp_path / "pwned"),))
    torch.save({"model": Evil()}, path)
    from fkal.io import load_torch
    with pytest.raises(UserError, match="init_rotation.pt"):
        load_torch(path, "fix")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("argv, message", [
    (["--iterations", "0"], "--iterations: must be at least 1 (got 0)"),
    (["--iterations", "-1"], "--iterations: must be at least 1 (got -1)"),
    (["--epochs", "-3"], "--epochs: must be at least 1 (got -3)"),
    (["--noise-ratio", "1"], "--noise-ratio: must be below 1"),
    (["--imbalance-ratios", "nan"], "--imbalance-ratios: must be a finite number"),
    (["--lloss-cutoff", "2"], "--lloss-cutoff: must be at most 1"),
    (["--run-start", "2", "--run-stop", "1"], "--run-stop 1 must be above --run-start 2"),
    (["--fresh", "random", "--only", "pcc-L20"], "--fresh random: not among the configurations"),
])
def test_out_of_range_numbers_are_refused_at_parse_time(tiny_mnist, tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert main(common(tiny_mnist, out) + argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not out.exists()


def test_an_unwritable_out_is_one_clear_error(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "readonly"
    out.mkdir()
    out.chmod(0o555)
    try:
        probe = out / "probe"
        try:
            probe.write_text("x")                # root ignores permissions: nothing to test then
            pytest.skip("running as a user that writes into read-only folders")
        except PermissionError:
            pass
        assert main(common(tiny_mnist, out / "sub", "--only", "random")) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--out" in err and "not writable" in err
    finally:
        out.chmod(0o755)


def test_out_inside_a_file_is_one_clear_error(tiny_mnist, tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    assert main(common(tiny_mnist, blocker / "out", "--only", "random")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out" in err


@pytest.mark.parametrize("config,options,changed,message", [
    ("galaxy", {"galaxy_class_order": "round-robin", "galaxy_graph_order": "paired"}, ["--galaxy-class-order", "random"],
     "--galaxy-class-order: round-robin there, random now"),
    ("direct", {"direct_b1": 20, "direct_class_budget": None}, ["--direct-b1", "5"], "--direct-b1: 20 there, 5 now"),
])
def test_successor_options_are_recorded_and_compared_on_resume(tiny_mnist, tmp_path, capsys, config, options,
                                                               changed, message):
    """GALAXY's class order and DIRECT's B1 and phase-A budget shape their picks: each record carries them, and a
    resume with another value is one error line naming the option."""
    out = tmp_path / "out"
    assert main(common(tiny_mnist, out, "--only", config, "--iterations", "1")) == 0
    records, _ = results_of(out)
    assert [r["settings"]["options"] for r in records] == [options]
    capsys.readouterr()
    assert main(common(tiny_mnist, out, "--only", config, "--iterations", "1", *changed)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_a_state_that_does_not_fit_the_run_is_one_clear_error(tmp_path):
    from fkal.run_state import load_state
    path = tmp_path / "state_b1.pt"
    torch.save({"models": [{"w": torch.zeros(2)}], "labeled_at": torch.full((5,), -1), "settings_id": "abc"}, path)
    assert load_state(path, 5, "fix", settings_id="abc", members=1)["labeled_at"].tolist() == [-1] * 5
    for kwargs, message in [
            ({"n_pool": 6}, f"{path} holds the selections of a pool of 5 images, this run's pool has 6: fix"),
            ({"n_pool": 5, "members": 2}, f"{path} holds 1 models where the configuration has 2: fix"),
            ({"n_pool": 5, "settings_id": "xyz"}, f"{path} was made by another configuration or with other "
                                                     "settings (settings abc, this configuration's are xyz): fix")]:
        with pytest.raises(UserError) as e:
            load_state(path, fix="fix", **kwargs)
        assert str(e.value) == message


def test_results_that_are_a_folder_are_one_clear_error(tmp_path):
    from fkal.run_state import read_results
    (tmp_path / "results.jsonl").mkdir()
    with pytest.raises(UserError) as e:
        read_results(tmp_path / "results.jsonl")
    assert str(e.value) == (f"{tmp_path / 'results.jsonl'} is not a file: run.py keeps its results there; move it "
                            "away, or use another --out")


@pytest.mark.parametrize("name, seeded", [("varR-E4-K32", True), ("entropy", True), ("bald", True), ("std", True),
                                          ("pfk-trC-L80", True), ("pfk-mi-L80", True), ("pfk-mi-diag-L80", True),
                                          ("random", False), ("pfk-phat-L80", False), ("coreset", False)])
def test_eval_batch_is_a_setting_of_the_configurations_whose_draws_it_seeds(tiny_mnist, tmp_path, name, seeded):
    """MC-dropout masks and the Monte Carlo estimators' perturbations are drawn per batch of the pool, so
    ``--eval-batch`` changes their picks and is part of their settings (a resume with another is refused); the
    other configurations' picks do not depend on it and their rows do not split by it."""
    from fkal.acquisitions.registry import ACQUISITIONS
    from fkal.config import parse_config
    from fkal.data.mnist import load_mnist
    from fkal.run_state import config_settings
    from test_resume import settings
    s = settings(tmp_path, 1)
    got = config_settings(s, load_mnist(str(tiny_mnist), download=False), parse_config(name, ACQUISITIONS), 0, 4.0, 1)
    assert got.get("eval_batch") == (s.eval_batch if seeded else None) and ("eval_batch" in got) == seeded


def test_a_state_that_does_not_fit_says_what_it_lacks_what_it_has_besides_and_what_has_another_shape():
    from fkal.state.checkpoints import misfit as _misfit
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    want = model.state_dict()                   # 0.weight, 0.bias, 1.weight, 1.bias, 2.weight, 2.bias
    assert _misfit(model, dict(want)) == "its weights do not load"
    assert _misfit(model, [1, 2]) == "a list, not a dict of weights"
    lacking = {k: v for k, v in want.items() if k.startswith("2.")}
    assert _misfit(model, lacking) == "lacks 0.weight, 0.bias, 1.weight and 1 more"
    besides = dict(want, **{"3.weight": torch.zeros(1)})
    assert _misfit(model, besides) == "has 3.weight besides"
    reshaped = dict(want, **{"1.bias": torch.zeros(5), "0.weight": torch.zeros(3, 3)})
    assert _misfit(model, reshaped) == "0.weight, 1.bias of another shape"
    everything = {"0.weight": torch.zeros(1), "0.bias": want["0.bias"], "x": torch.zeros(1)}
    assert _misfit(model, everything) == ("lacks 1.weight, 1.bias, 2.weight and 1 more; has x besides; "
                                          "0.weight of another shape")


def test_without_unsup_epochs_a_run_takes_the_pretraining_its_initial_models_were_made_with(tiny_mnist, tmp_path,
                                                                                          capsys):
    """``--initial --unsup-epochs 1`` then the AL stage without the flag (the README's main job): the stage takes
    the initial models' schedule and records it; the same flag given with another value is still refused."""
    out = tmp_path / "out"
    argv = common(tiny_mnist, out)
    at = argv.index("--unsup-epochs")
    shared = argv[:at] + argv[at + 2:]
    assert main([*shared, "--initial", "--unsup-epochs", "1"]) == 0
    capsys.readouterr()
    assert main([*shared, "--only", "random"]) == 0
    err = capsys.readouterr().err
    assert "the initial models were pretrained for 1 epoch; this run takes their schedule (--unsup-epochs 1)" in err
    records, _ = results_of(out)
    assert [r["settings"]["unsup"]["epochs"] for r in records] == [1, 1]
    # the records equal those of a run that repeats the flag: the same settings id, nothing made twice
    assert main([*shared, "--only", "random", "--unsup-epochs", "1", "--iterations", "3"]) == 0
    records, _ = results_of(out)
    assert len(records) == 3 and len({r["settings_id"] for r in records}) == 1
    capsys.readouterr()
    assert main([*shared, "--only", "coreset", "--unsup-epochs", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--unsup-epochs: 1 there, 2 now" in err
    assert "without --unsup-epochs a run takes the pretraining they were made with" in err
