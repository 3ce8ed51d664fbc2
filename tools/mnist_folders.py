"""Folders of PNG files made from the real MNIST, to try ``label_next.py`` on images whose labels are known.

    python tools/mnist_folders.py write --data-root ../shared/datasets --out demo --pool-size 10000 --ir 100
    python tools/mnist_folders.py annotate demo/pool_truth.csv my_project/round1/to_label.csv demo/round1.csv

``write`` makes, from MNIST's 60,000 training images (drawn with --seed, disjoint):
  {out}/pool/{k}/{index}.png   the unlabeled pool, nested in folders of 1,000, with the paper's bias
                               (docs/protocol.md): classes 0-4 keep all their images of a --pool-size draw, classes 5-9
                               together keep int(n_0-4 / IR) of theirs
  {out}/pool_truth.csv         path,label of every pool image: the answers an annotator would give
  {out}/labeled/{class}/...    --labeled-per-class images of each class (balanced), the given labeled images
  {out}/val/{class}/...        --val-per-class images of each class (balanced), D_v
``annotate`` plays the annotator: it writes path,label for the picks of a round's to_label.csv from the truth
and prints how many of the picks are of the rare classes 5-9.
``simulate`` runs ``label_next.py`` select / annotate / merge for some rounds and acquisitions, one state folder
each, and prints the rare share of every round's picks and the time of each round:

    python tools/mnist_folders.py simulate --folders demo --states runs --acquisitions pfk-phat random --rounds 3
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

RARE = tuple(str(c) for c in range(5, 10))


def _save_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def write_folders(data_root: str | Path, out: str | Path, pool_size: int = 10_000, ir: float = 100.0,
                  labeled_per_class: int = 10, val_per_class: int = 100, seed: int = 0) -> dict:
    """Write the folders (see the module docstring); returns the counts. Never downloads MNIST."""
    from fkal.data.mnist import load_mnist

    train = load_mnist(str(data_root), download=False).train
    images, labels = train.images[:, 0].numpy(), train.labels
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    out = Path(out)
    taken = np.zeros(len(labels), bool)
    sets = {}
    for name, per_class in (("val", val_per_class), ("labeled", labeled_per_class)):
        rows = []
        for c in range(10):
            members = order[(labels[order] == c) & ~taken[order]][:per_class]
            taken[members] = True
            rows.extend(members.tolist())
        sets[name] = rows
        for i in rows:
            _save_png(images[i], out / name / str(labels[i]) / f"{i}.png")
    draw = order[~taken[order]][:pool_size]
    rare = labels[draw] >= 5
    keep_rare = rng.choice(np.flatnonzero(rare), size=int((~rare).sum() / ir), replace=False)
    pool = np.sort(np.concatenate([draw[~rare], draw[keep_rare]]))
    truth = []
    for i in pool:
        path = out / "pool" / str(i // 1000) / f"{i}.png"
        _save_png(images[i], path)
        truth.append((str(path.resolve()), str(labels[i])))
    with open(out / "pool_truth.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path", "label"])
        w.writerows(truth)
    return {"pool": len(pool), "rare": int((labels[pool] >= 5).sum()), "labeled": len(sets["labeled"]),
            "val": len(sets["val"])}


def read_truth(path: str | Path) -> dict[str, str]:
    with open(path, newline="") as f:
        return {row["path"]: row["label"] for row in csv.DictReader(f)}


def annotate(truth: dict[str, str], to_label: str | Path, out: str | Path) -> tuple[int, int]:
    """Write ``path,label`` for the picks of ``to_label`` from ``truth``; returns (rare picks, picks)."""
    with open(to_label, newline="") as f:
        paths = [row["path"] for row in csv.DictReader(f)]
    with open(out, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path", "label"])
        w.writerows((p, truth[p]) for p in paths)
    return sum(truth[p] in RARE for p in paths), len(paths)


def simulate(folders: str | Path, states: str | Path, acquisitions: list[str], rounds: int, budget: int,
             extra: list[str], seeds: list[int]) -> list[dict]:
    """select, annotate from the truth, merge: ``rounds`` times per acquisition and seed; one row per round."""
    import json

    from fkal.labeling.cli import main as label_next

    folders, states = Path(folders), Path(states)
    truth = read_truth(folders / "pool_truth.csv")
    rows = []
    for acq in acquisitions:
        for seed in seeds:
            state = states / f"{acq}-seed{seed}"
            for n in range(1, rounds + 1):
                args = ["select", "--state", str(state), "--budget", str(budget)]
                args += [a for a in extra if a == "--no-progress"]              # per round; the rest is fixed
                if n == 1:
                    args += ["--pool", str(folders / "pool"), "--labeled", str(folders / "labeled"), "--val",
                             str(folders / "val"), "--acquisition", acq, "--seed", str(seed),
                             *[a for a in extra if a != "--no-progress"]]
                if label_next(args) != 0:
                    raise SystemExit(f"select failed: {' '.join(args)}")
                rec = json.loads((state / f"round{n}" / "round.json").read_text())
                out = state / f"round{n}" / "annotations.csv"
                rare, picked = annotate(truth, state / f"round{n}" / "to_label.csv", out)
                if label_next(["merge", "--state", str(state), str(out)]) != 0:
                    raise SystemExit(f"merge failed: {out}")
                rows.append({"acquisition": rec["acquisition"], "seed": seed, "round": n, "rare": rare,
                             "picks": picked, "seconds": rec["seconds"]})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write the pool, labeled and validation folders")
    w.add_argument("--data-root", required=True, help="the folder that holds MNIST/raw")
    w.add_argument("--out", required=True)
    w.add_argument("--pool-size", type=int, default=10_000, help="MNIST images drawn for the pool before the bias")
    w.add_argument("--ir", type=float, default=100.0, help="imbalance ratio of classes 0-4 over classes 5-9")
    w.add_argument("--labeled-per-class", type=int, default=10)
    w.add_argument("--val-per-class", type=int, default=100)
    w.add_argument("--seed", type=int, default=0)
    a = sub.add_parser("annotate", help="answer a round's to_label.csv from the truth")
    a.add_argument("truth", help="pool_truth.csv")
    a.add_argument("to_label", help="round{n}/to_label.csv")
    a.add_argument("out", help="the annotations CSV to write (path,label)")
    m = sub.add_parser("simulate", help="rounds of select / annotate / merge; the rare share of each round's picks")
    m.add_argument("--folders", required=True, help="the --out of write")
    m.add_argument("--states", required=True, help="a folder for the state folders, one per acquisition and seed")
    m.add_argument("--acquisitions", nargs="+", default=["pfk-phat", "random"])
    m.add_argument("--rounds", type=int, default=3)
    m.add_argument("--budget", type=int, default=125)
    m.add_argument("--seeds", type=int, nargs="+", default=[0])
    m.add_argument("extra", nargs=argparse.REMAINDER, help="more select options of the first round, after --")
    args = p.parse_args(argv)
    if args.command == "simulate":
        extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
        rows = simulate(args.folders, args.states, args.acquisitions, args.rounds, args.budget, extra, args.seeds)
        print("| acquisition | seed | round | rare picks (5-9) | share | round seconds (pretrain, train, query) |")
        print("| --- | --- | --- | --- | --- | --- |")
        for r in rows:
            sec = r["seconds"]
            print(f"| {r['acquisition']} | {r['seed']} | {r['round']} | {r['rare']} of {r['picks']} | "
                  f"{100.0 * r['rare'] / r['picks']:.1f}% | {sec['round']:.1f} ({sec['pretrain']:.1f}, "
                  f"{sec['train']:.1f}, {sec['query']:.1f}) |")
        return 0
    if args.command == "write":
        counts = write_folders(args.data_root, args.out, args.pool_size, args.ir, args.labeled_per_class,
                               args.val_per_class, args.seed)
        print(f"{args.out}: pool {counts['pool']} images ({counts['rare']} of classes 5-9), labeled "
              f"{counts['labeled']}, validation {counts['val']}")
    else:
        rare, n = annotate(read_truth(args.truth), args.to_label, args.out)
        print(f"{args.out}: {n} labels; rare classes 5-9: {rare} of {n} ({100.0 * rare / max(n, 1):.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
