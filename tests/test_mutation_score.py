"""tools/mutation_score.py: its mutmut call (a temp folder per pytest session), its samples and their intervals."""
from pathlib import Path

from tools import mutation_score as tool


def test_every_mutmut_run_gives_its_sessions_one_temp_root_per_checkout(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(tool.subprocess, "call", lambda cmd, cwd, env: calls.append((cmd, cwd, env)) or 0)
    assert tool.run_mutmut(["a__mutmut_1"], tmp_path / "one") == 0
    stale = Path(calls[0][2]["FKAL_PYTEST_TMP"]) / "pid1"
    stale.mkdir(parents=True)                                  # what a session killed by a timeout leaves
    tool.run_mutmut([], tmp_path / "one", workers=2)
    tool.run_mutmut([], tmp_path / "two")
    roots = [env["FKAL_PYTEST_TMP"] for _, _, env in calls]
    assert roots[0] == roots[1] and roots[0] != roots[2]                            # per checkout, not per call
    assert Path(roots[0]).parent == Path(tool.tempfile.gettempdir()) and not stale.exists()
    assert calls[0][0][-1] == "a__mutmut_1" and calls[0][2]["OMP_NUM_THREADS"] == "1"
    assert [c[0][c[0].index("--max-children") + 1] for c in calls] == ["1", "2", "1"]


def test_sessions_side_by_side_get_their_own_temp_folder_removed_at_the_end(tmp_path):
    """tests/conftest.py under FKAL_PYTEST_TMP: each pytest session its own basetemp, gone when it ends; also two
    sessions one after the other in one process (as mutmut runs its first ones), not only two processes."""
    import os
    import subprocess
    import sys
    (tmp_path / "test_where.py").write_text(
        "import os\n"
        "def test_where(tmp_path):\n"
        "    open(os.environ['WHERE_OUT'], 'a').write(f'{tmp_path}\\n')\n")
    root, seen = tmp_path / "root", []
    args = ["-q", "-p", "no:cacheprovider", "-p", "tests.conftest", "--rootdir", str(tmp_path), "-c", os.devnull,
            str(tmp_path / "test_where.py")]
    sessions = f"import pytest, sys; a = {args!r}; sys.exit(pytest.main(a) or pytest.main(a))"
    for i, command in enumerate([["-c", sessions], ["-m", "pytest", *args]]):     # two in one process, then one
        out = tmp_path / f"where{i}.txt"
        env = {**os.environ, "FKAL_PYTEST_TMP": str(root), "WHERE_OUT": str(out), "PYTEST_ADDOPTS": ""}
        done = subprocess.run([sys.executable, *command], cwd=tool.ROOT, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        seen += [Path(line) for line in out.read_text().splitlines()]
    own = [next(q for q in p.parents if q.parent == root) for p in seen]             # root/pid<N>-<random>
    assert len(seen) == 3 and len(set(own)) == 3 and all(q.name.startswith("pid") for q in own)
    assert not any(root.iterdir())                                                          # all removed


def test_a_sample_is_seeded_per_module_and_a_larger_one_extends_it():
    names = [f"fkal.x.x_f__mutmut_{i}" for i in range(40)]
    small, large = tool.sample_of(names, "loop", 5, 0), tool.sample_of(reversed(names), "loop", 12, 0)
    assert large[:5] == small and len(set(large)) == 12 and set(large) <= set(names)
    assert tool.sample_of(names, "loop", 12, 1) != large and tool.sample_of(names, "core-set", 12, 0) != large
    assert tool.sample_of(names, "loop", 100, 0) != sorted(names) and len(tool.sample_of(names, "loop", 100, 0)) == 40


def test_the_wilson_interval_bounds_are_where_the_score_test_reaches_z():
    """Recomputed by bisection on |k/n - p| = z sqrt(p (1 - p) / n), the interval's definition."""
    import math

    def bound(k, n, lo, hi):
        f = lambda p: abs(k / n - p) - 1.96 * math.sqrt(p * (1 - p) / n)     # noqa: E731
        for _ in range(100):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if (f(lo) > 0) == (f(mid) > 0) else (lo, mid)
        return 100 * (lo + hi) / 2

    for k, n in [(9, 10), (3, 12), (11, 12), (1, 7)]:
        low, high = tool.wilson_interval(k, n)
        assert math.isclose(low, bound(k, n, 1e-12, k / n), abs_tol=1e-6)
        assert math.isclose(high, bound(k, n, k / n, 1 - 1e-12), abs_tol=1e-6)
    assert tool.wilson_interval(12, 12)[1] == 100.0 and tool.wilson_interval(0, 5)[0] == 0.0
    assert tool.wilson_interval(0, 0) == (0.0, 100.0)


def test_a_sampled_row_counts_only_the_sample(tmp_path):
    meta = tmp_path / "fkal" / "loop.py.meta"
    meta.parent.mkdir(parents=True)
    codes = {"a": 1, "b": 0, "c": None, "d": 1, "e": 0}
    meta.write_text(tool.json.dumps({"exit_code_by_key": codes}))
    row = tool.module_row("loop", "fkal/loop.py", tmp_path, {"e": "why"}, sample=["a", "b", "c", "e"])
    assert (row["mutants"], row["killed"], row["survived"], row["unchecked"], row["equivalent"]) == (4, 1, 1, 1, 1)
    assert row["score"] == 50.0 and row["interval"] == tool.wilson_interval(1, 2)
    assert "interval" not in tool.module_row("loop", "fkal/loop.py", tmp_path, {})


def test_equivalents_are_printed_with_the_lines_they_change_now_and_missing_names_fail(tmp_path, monkeypatch,
                                                                                      capsys):
    meta = tmp_path / "mutants" / "fkal" / "loop.py.meta"
    meta.parent.mkdir(parents=True)
    meta.write_text(tool.json.dumps({"exit_code_by_key": {"fkal.loop.x_f__mutmut_1": 0, "fkal.loop.x_f__mutmut_2": 1}}))
    monkeypatch.setattr(tool, "equivalent_mutants", lambda: {"fkal.loop.x_f__mutmut_1": "why one",
                                                             "fkal.loop.x_g__mutmut_7": "why gone",
                                                             "fkal.selection.x_h__mutmut_3": "another module"})
    monkeypatch.setattr(tool, "changed_lines", lambda mutant, source, root: [f"-old {mutant}", f"+new {source}"])
    assert tool.print_equivalents(["loop"], tmp_path / "mutants", tmp_path) == 1
    assert capsys.readouterr().out.splitlines() == [
        "fkal.loop.x_f__mutmut_1  why one", "    -old fkal.loop.x_f__mutmut_1", "    +new fkal/loop.py",
        "fkal.loop.x_g__mutmut_7  why gone", "    (no such mutant now)"]
    monkeypatch.setattr(tool, "equivalent_mutants", lambda: {"fkal.loop.x_f__mutmut_1": "why one"})
    assert tool.print_equivalents(["loop"], tmp_path / "mutants", tmp_path) == 0


def test_the_modules_scored_are_the_modules_mutmut_mutates_and_they_exist():
    """setup.cfg and tools/mutation_score.py name the same modules, and they exist. A new acquisition is enrolled by
    a line in each; landing one does not require it."""
    import configparser
    cfg = configparser.ConfigParser()
    cfg.read(tool.ROOT / "setup.cfg")
    mutated = cfg["mutmut"]["only_mutate"].split()
    assert sorted(mutated) == sorted(tool.MODULES.values()) and len(set(mutated)) == len(mutated)
    assert all((tool.ROOT / m).is_file() for m in mutated)


def test_a_sample_of_modules_without_mutants_first_generates_them_without_running_any(monkeypatch, tmp_path):
    """Drawing a sample needs the module's mutants: one mutmut run with a filter that matches none, then only the
    sample's mutants run (not every mutant of the module, as a run without --sample does)."""
    import json
    calls = []
    meta = tmp_path / "mutants" / (tool.MODULES["acquisitions/base"] + ".meta")

    def mutmut(names, cwd, workers=1):
        calls.append(list(names))
        if names == [tool.GENERATE_ONLY]:
            meta.write_text(json.dumps({"exit_code_by_key": {f"m{i}": None for i in range(9)}}))
        return 0
    monkeypatch.setattr(tool, "run_mutmut", mutmut)
    monkeypatch.setattr(tool, "equivalent_mutants", lambda: {})
    copy, stats = tmp_path / "mutants" / tool.MODULES["acquisitions/base"], tmp_path / "mutants" / "mutmut-stats.json"
    copy.parent.mkdir(parents=True)
    copy.write_text("# a plain copy from a run before the module was mutated\n")
    stats.write_text("{}")
    tool.main(["--run", "--root", str(tmp_path), "--sample", "3", "--modules", "acquisitions/base"])
    assert calls == [[tool.GENERATE_ONLY], tool.sample_of({f"m{i}": None for i in range(9)}, "acquisitions/base", 3, 0)]
    assert not copy.exists() and not stats.exists()               # mutmut would take the copy for done
