"""Kill-and-resume: what a process killed with SIGKILL leaves behind is cleaned up or redone by the next run."""


def test_a_resumed_run_removes_the_temporary_files_of_killed_writes(tiny_mnist, tmp_path):
    """A process killed between writing a temporary file and renaming it leaves the file; the next run on that
    folder removes it (under the folder's lock) and ends as an uninterrupted run."""
    from fkal.cli import main
    common = ["--data-root", str(tiny_mnist), "--out", str(tmp_path / "out"), "--run-stop", "1",
              "--imbalance-ratios", "4", "--train-size", "400", "--val-size", "100", "--unsup-epochs", "1",
              "--epochs", "1", "--pool-size", "10", "--no-progress", "--only", "random"]
    assert main(common + ["--iterations", "1"]) == 0
    ir = tmp_path / "out" / "MNIST" / "run0" / "ir4"
    left = [ir / "rotation" / "random" / ".state_b02.pt.k1ll3d.tmp", ir / ".init_random.pt.k1ll3d.tmp"]
    for p in left:
        p.write_bytes(b"half a checkpoint")
    assert main(common + ["--iterations", "2"]) == 0
    assert not [p for p in left if p.exists()]
    assert sorted(p.name for p in (ir / "rotation" / "random").iterdir()) == [
        "settings.json", "state_b01.pt", "state_b02.pt"]
