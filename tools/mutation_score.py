#!/usr/bin/env python
"""Mutation score of the modules that decide which images are picked, with mutmut 3.x.

    pip install "mutmut>=3,<4"
    nohup python tools/mutation_score.py --run > mutation.log 2>&1 &     # hours on two cores; resumable
    python tools/mutation_score.py                                       # the table from what has run so far
    python tools/mutation_score.py --survivors                           # and every surviving mutant's name
    python tools/mutation_score.py --survivors --diffs                   # with the lines each one changes
    python tools/mutation_score.py --run --recheck                       # after adding tests: survivors again
    python tools/mutation_score.py --run --sample 12 --workers 2         # a seeded sample of 12 per module
    python tools/mutation_score.py --equivalents                         # each equivalent's reason and diff

mutmut reads its settings from ``setup.cfg`` ([mutmut]: the modules to mutate and the tests to run, the fast unit
tests only: ``-m "not e2e and not real_data"``). It copies the code into ``mutants/``, runs the tests once to
learn which tests reach which function, then runs, for each mutant, only the tests that reach its function.
Every verdict is written to ``mutants/<module>.meta`` as soon as it is known, so an interrupted run resumes where
it stopped: ``--run`` passes mutmut the mutants without a verdict, module by module in the order of ``MODULES``
(a run cut short leaves whole modules done), ``--workers`` at a time (default one) under ``nice -n 19`` with
``OMP_NUM_THREADS=1`` each.

A mutant whose tests all pass costs the whole of them, minutes where the tests train models (the loop, VAAL): a
full pass over every module takes days on two cores. ``--sample N`` runs and reports a seeded uniform sample of
N mutants per module, and the score on it comes with its 95% Wilson interval (a module run for the first time
with ``--sample`` gets its mutants generated first, none of them run, so that the sample can be drawn).

The score of a module is killed / (mutants - equivalent - unchecked): a timeout or a crash of the tests counts
as killed, a mutant that no test reaches ("no tests") as survived. Equivalent mutants (no test can tell them from
the original) are listed in ``tools/mutation_equivalent.txt``, one a line: the mutant's name, then why.
This runs outside CI.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENT = ROOT / "tools" / "mutation_equivalent.txt"

# display name -> file; the order in which --run works through them
MODULES: dict[str, str] = {
    "selection": "fkal/selection.py",
    "kernels": "fkal/kernels.py",
    "descriptors": "fkal/descriptors.py",
    "pseudo-labels": "fkal/pseudo_labels.py",
    "acquisitions/random": "fkal/acquisitions/random_sampling.py",
    "acquisitions/fisher-kernel": "fkal/acquisitions/fisher_kernel.py",
    "uncertainty": "fkal/acquisitions/uncertainty.py",
    "core-set": "fkal/acquisitions/coreset.py",
    "vaal/train": "vaal/train.py",
    "vaal/acquisitions": "vaal/acquisitions.py",
    "vaal/models": "vaal/models.py",
    "run-state": "fkal/state/resume.py",
    "loop": "fkal/loop.py",
    "acquisitions/badge": "fkal/acquisitions/badge.py",
    "acquisitions/similar": "fkal/acquisitions/similar.py",
    "acquisitions/typiclust": "fkal/acquisitions/typiclust.py",
    "acquisitions/galaxy": "fkal/acquisitions/galaxy.py",
    "acquisitions/direct": "fkal/acquisitions/direct.py",
    "acquisitions/base": "fkal/acquisitions/base.py",
    "acquisitions/handover": "fkal/acquisitions/handover.py",
}
# A filter that matches no mutant: mutmut generates every module's mutants and learns which tests reach which
# function, then stops at the filter (an assertion: "nothing matches") without running any.
GENERATE_ONLY = "fkal.no_such_module.x_no_such_function__mutmut_1"

KILLED = {1, 3, -11, -9}              # test failure, pytest internal error, crash
TIMEOUT = {36, 24, -24, 152, 255}     # mutmut's timeout codes (SIGXCPU)
SURVIVED = {0}
NO_TESTS = {5, 33}


def equivalent_mutants(path: Path = EQUIVALENT) -> dict[str, str]:
    """name -> reason, from lines ``name  reason`` (``#`` starts a comment)."""
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line.strip()
            if line:
                name, _, reason = line.partition(" ")
                out[name] = reason.strip()
    return out


def verdicts(source: str, mutants_dir: Path) -> dict[str, int | None]:
    """mutant name -> mutmut's exit code (None: not run yet) for one source file."""
    meta = mutants_dir / (source + ".meta")
    if not meta.exists():
        return {}
    return json.loads(meta.read_text())["exit_code_by_key"]


def module_row(name: str, source: str, mutants_dir: Path, equivalent: dict[str, str],
               sample: list[str] | None = None) -> dict:
    """The counts and the score of one module, over all its mutants or over ``sample`` of them (then with the
    score's 95% interval)."""
    codes = verdicts(source, mutants_dir)
    if sample is not None:
        codes = {m: codes[m] for m in sample}
    row = {"module": name, "mutants": len(codes), "killed": 0, "survived": 0, "no tests": 0, "timeout": 0,
           "equivalent": 0, "unchecked": 0, "survivors": []}
    for mutant, code in codes.items():
        if mutant in equivalent and code in KILLED | TIMEOUT:
            print(f"warning: {mutant} is listed as equivalent but a test kills it: remove it from "
                  f"{EQUIVALENT.name}", file=sys.stderr)
        if mutant in equivalent:
            row["equivalent"] += 1
        elif code is None:
            row["unchecked"] += 1
        elif code in KILLED:
            row["killed"] += 1
        elif code in TIMEOUT:
            row["timeout"] += 1
        elif code in NO_TESTS:
            row["no tests"] += 1
            row["survivors"].append(mutant)
        else:                                                   # 0, and anything mutmut calls suspicious
            row["survived"] += 1
            row["survivors"].append(mutant)
    denominator = row["mutants"] - row["equivalent"] - row["unchecked"]
    row["score"] = None if denominator == 0 else 100.0 * (row["killed"] + row["timeout"]) / denominator
    if sample is not None:
        row["interval"] = wilson_interval(row["killed"] + row["timeout"], denominator)
    return row


def changed_lines(mutant: str, source: str, root: Path) -> list[str]:
    """The removed and added lines of a mutant (mutmut's own diff), read from ``root/mutants``."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    cwd = os.getcwd()
    os.chdir(root)
    try:
        diff = get_diff_for_mutant(mutant, path=source)
    finally:
        os.chdir(cwd)
    return [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]


def print_changed_lines(mutant: str, source: str, root: Path) -> None:
    for line in changed_lines(mutant, source, root):
        print("    " + line.strip()[:150])


def dotted(source: str) -> str:
    """``fkal/loop.py`` -> ``fkal.loop``: the prefix of the module's mutant names."""
    return source[:-3].replace("/", ".")


def print_table(rows: list[dict], survivors: bool = False, diffs_root: Path | None = None) -> None:
    cols = ["module", "mutants", "killed", "survived", "no tests", "timeout", "equivalent", "unchecked", "score"]
    print(f"{cols[0]:<28}" + "".join(f"{c:>11}" for c in cols[1:]))
    for r in rows:
        score = "-" if r["score"] is None else f"{r['score']:.1f}%"
        done = "" if r["unchecked"] == 0 else "  (unfinished)"
        if "interval" in r and r["score"] is not None:
            done = f"  [{r['interval'][0]:.0f}, {r['interval'][1]:.0f}]" + done
        print(f"{r['module']:<28}" + "".join(f"{r[c]:>11}" for c in cols[1:-1]) + f"{score:>11}{done}")
    total = {c: sum(r[c] for r in rows) for c in cols[1:-1]}
    denominator = total["mutants"] - total["equivalent"] - total["unchecked"]
    score = "-" if denominator == 0 else f"{100.0 * (total['killed'] + total['timeout']) / denominator:.1f}%"
    print(f"{'all':<28}" + "".join(f"{total[c]:>11}" for c in cols[1:-1]) + f"{score:>11}")
    if survivors:
        for r in rows:
            for m in r["survivors"]:
                print(f"survived  {r['module']:<26} {m}")
                if diffs_root is not None:
                    print_changed_lines(m, MODULES[r["module"]], diffs_root)


def print_equivalents(modules: list[str], mutants_dir: Path, root: Path) -> int:
    """Every equivalent mutant of ``modules``: its name and reason, then the lines it changes now. A name that
    mutmut no longer generates is reported; the exit status is 1 then."""
    equivalent, missing = equivalent_mutants(), 0
    for name in modules:
        codes = verdicts(MODULES[name], mutants_dir)
        prefix = dotted(MODULES[name]) + ".x"
        for mutant, reason in equivalent.items():
            if not mutant.startswith(prefix):
                continue
            print(f"{mutant}  {reason}")
            if mutant not in codes:
                missing += 1
                print("    (no such mutant now)")
                continue
            print_changed_lines(mutant, MODULES[name], root)
    return 1 if missing else 0


def forget_survivors(source: str, mutants_dir: Path) -> int:
    """Clear the verdicts of the survivors (and "no tests") of one source file, so that --run checks them again
    with the tests as they are now. Returns how many."""
    meta = mutants_dir / (source + ".meta")
    if not meta.exists():
        return 0
    data = json.loads(meta.read_text())
    codes = data["exit_code_by_key"]
    again = [m for m, code in codes.items() if code is not None and code not in KILLED | TIMEOUT]
    for m in again:
        codes[m] = None
    meta.write_text(json.dumps(data))
    return len(again)


def run_mutmut(names: list[str], cwd: Path, workers: int = 1) -> int:
    """One ``mutmut run`` with ``workers`` mutants at a time. Every pytest session gets its own temp folder under
    one folder per checkout (``FKAL_PYTEST_TMP``, read by tests/conftest.py), removed when the session ends:
    without it each session left a new ``pytest-of-<user>/pytest-N`` behind (mutmut's forked sessions escape
    pytest's keep-the-last-three rule), about 70 GB in two hours here, and sessions side by side must not share
    one ``--basetemp``, which pytest empties at the start of each session."""
    digest = hashlib.sha1(str(cwd.resolve()).encode()).hexdigest()[:8]      # one folder per checkout
    tmp = Path(tempfile.gettempdir()) / f"fkal-mutation-{digest}"
    shutil.rmtree(tmp, ignore_errors=True)                    # what a killed session (a timeout) left behind
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "FKAL_PYTEST_TMP": str(tmp)}
    cmd = ["nice", "-n", "19", "mutmut", "run", "--max-children", str(workers), *names]
    print("$", " ".join(cmd[:6]), f"<{len(names)} mutants>" if names else "", flush=True)
    return subprocess.call(cmd, cwd=cwd, env=env)


def sample_of(names, module: str, n: int, seed: int) -> list[str]:
    """The first ``n`` of a seeded random order of a module's mutants: a uniform sample, the same for the same
    (module, seed), and a larger ``n`` extends a smaller one."""
    order = sorted(names)
    random.Random(f"{seed}/{module}").shuffle(order)
    return order[:n]


def wilson_interval(killed: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval (in %) of a proportion killed / n, for a score measured on a sample."""
    if n == 0:
        return 0.0, 100.0
    p = killed / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return 100.0 * max(0.0, center - half), 100.0 * min(1.0, center + half)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="store_true", help="run mutmut on the mutants without a verdict first")
    parser.add_argument("--recheck", action="store_true",
                        help="with --run: check the surviving mutants again (after adding tests)")
    parser.add_argument("--modules", nargs="+", choices=list(MODULES), default=list(MODULES),
                        help="the modules to run and report (default: all, in this order)")
    parser.add_argument("--survivors", action="store_true", help="list every surviving mutant")
    parser.add_argument("--diffs", action="store_true", help="with --survivors: the lines each survivor changes")
    parser.add_argument("--equivalents", action="store_true",
                        help="print each listed equivalent mutant's reason above the lines it changes now, to check "
                             "that they still agree (a name points at another mutation once its function changes)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout holding setup.cfg and mutants/")
    parser.add_argument("--sample", type=int, metavar="N",
                        help="run and report only a seeded random sample of N mutants per module (the score's 95%% "
                             "interval beside it); a larger N extends a smaller one")
    parser.add_argument("--seed", type=int, default=0, help="with --sample: the sample's seed (default 0)")
    parser.add_argument("--workers", type=int, default=1,
                        help="with --run: mutants run side by side (mutmut's --max-children; default 1)")
    args = parser.parse_args(argv)
    if args.sample is not None and args.sample < 1:
        parser.error(f"--sample takes a positive number of mutants per module, not {args.sample}")
    if args.workers < 1:
        parser.error(f"--workers takes a positive number, not {args.workers}")

    mutants_dir = args.root / "mutants"
    if args.equivalents:
        return print_equivalents(args.modules, mutants_dir, args.root)

    def sample(name: str, codes: dict) -> list[str] | None:          # the module's mutants that --sample takes
        return None if args.sample is None else sample_of(codes, name, args.sample, args.seed)

    if args.run:
        if args.recheck:
            for name in args.modules:
                print(f"== {name}: {forget_survivors(MODULES[name], mutants_dir)} survivors to check again")
        new = [name for name in args.modules if not verdicts(MODULES[name], mutants_dir)]
        # a plain copy of a module added to setup.cfg after mutmut's first run is newer than the source, so mutmut
        # takes it for its mutated file and never mutates it; and the stats, which map tests to mutated functions
        # only, need collecting again
        stale = [mutants_dir / MODULES[name] for name in new] + ([mutants_dir / "mutmut-stats.json"] if new else [])
        for path in stale:
            if path.exists():
                print(f"== {path} removed (made before {', '.join(new)} were mutated)", flush=True)
                path.unlink()
        if new and args.sample is not None:                      # their mutants first, to draw the sample from
            print(f"== {', '.join(new)}: generating the mutants (none run)", flush=True)
            run_mutmut([GENERATE_ONLY], args.root, args.workers)
        for name in args.modules:
            codes = verdicts(MODULES[name], mutants_dir)
            if not codes:                                        # first run: mutmut generates every mutant
                print(f"== {name}: every mutant", flush=True)
                run_mutmut([dotted(MODULES[name]) + ".*"], args.root, args.workers)
                continue
            pending = [m for m in (sample(name, codes) or codes) if codes[m] is None]
            if pending:
                print(f"== {name}: {len(pending)} mutants to run", flush=True)
                run_mutmut(pending, args.root, args.workers)
    equivalent = equivalent_mutants()
    print_table([module_row(n, MODULES[n], mutants_dir, equivalent, sample(n, verdicts(MODULES[n], mutants_dir)))
                 for n in args.modules], args.survivors, args.root if args.diffs else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
