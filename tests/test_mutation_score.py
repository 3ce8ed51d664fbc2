"""tools/mutation_score.py's mutmut call: one pytest temp folder per checkout, emptied by every session."""
from pathlib import Path

from tools import mutation_score as tool


def test_every_mutmut_session_reuses_one_basetemp_per_checkout(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(tool.subprocess, "call", lambda cmd, cwd, env: calls.append((cmd, cwd, env)) or 0)
    monkeypatch.setenv("PYTEST_ADDOPTS", "-q")
    assert tool.run_mutmut(["a__mutmut_1"], tmp_path / "one") == 0
    tool.run_mutmut([], tmp_path / "one")
    tool.run_mutmut([], tmp_path / "two")
    opts = [env["PYTEST_ADDOPTS"].split() for _, _, env in calls]
    assert opts[0][0] == "-q" and opts[0][1].startswith("--basetemp=")              # the user's options kept
    assert opts[0] == opts[1] and opts[0] != opts[2]                                # per checkout, not per call
    assert Path(opts[0][1].split("=", 1)[1]).parent == Path(tool.tempfile.gettempdir())
    assert calls[0][0][-1] == "a__mutmut_1" and calls[0][2]["OMP_NUM_THREADS"] == "1"
