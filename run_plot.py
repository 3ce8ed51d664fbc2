#!/usr/bin/env python
"""Draw and tabulate active-learning results: the paper's accuracy curves, label saving, query cost, selections.

Reads every ``{out}/{DATASET}/run*/results.jsonl`` that ``run.py`` writes, prints the tables, and with ``--save``
writes the figures (PNG and PDF) and the tables (Markdown and CSV). ``python run_plot.py --help`` says it all.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from fkal import reporting as report
from fkal.reporting import figures as plots
from fkal.errors import UserError
from fkal.io import save_text

DESCRIPTION = """\
Draw and tabulate the active-learning results of one dataset.

Reads every {out}/{DATASET}/run*/results.jsonl (one line per completed iteration, written by run.py; a
'full-train' line from run.py --full-train gives the all-train-data accuracy) and groups the lines by
configuration, imbalance ratio (IR) and initial model (--unsupervised 1: rotation-pretrained, 0: random weights,
marked θ_rnd). Broken lines are skipped with a warning naming file and line; configurations with fewer runs or
iterations than the others are drawn as they are and named in one note each.

Printed (and written with --save as results.md and CSV files):
  - accuracy at every labeled count per configuration: mean ± sample std (ddof=1) over runs, number of runs;
  - label saving: the best baseline (highest final mean accuracy among all but pcc/pfk/pfk-sum) sets the target,
    its final mean accuracy; for each configuration, the fewest labels at which its mean accuracy reaches the
    target (linear interpolation between labeled counts), as a percentage fewer labels than the baseline needs;
  - improvement over random sampling: a configuration's accuracy minus random's in the same run (trial) at the
    same labeled count, mean ± std over runs (TA-VAAL's Figures 3-4; paired with the random runs of the same
    settings);
  - query (selection) and training seconds per iteration.

Figures (--save; PNG and PDF, one set per imbalance ratio, file names end in _IR{ratio}):
  accuracy_IR*           accuracy against labeled images (mean ± std over runs), labeled share of the pool on the
                         top axis, the all-train accuracy as a dotted line; random-init curves dashed
  cost_IR*               query seconds per iteration (log scale) beside training seconds
  selection_IR*          classes of the images selected at each iteration (mean over runs), one panel per
                         configuration
  selection_summary_IR*  entropy of each iteration's selected classes (TA-VAAL Fig. 7a) and the cumulative share
                         of the rare classes among the labeled images
  improvement_IR*        accuracy minus random sampling's, paired by run, mean with the std shaded (TA-VAAL
                         Figs. 3-4)
  accuracy_band_IR*      accuracy, mean with the std over runs shaded (TA-VAAL Figs. 11-12)

Legends give the paper's notation beside the configuration name, e.g. 'pfk-phat-L80  (R_zg, S=p^(y,z), L=80)'.
Exit code 2 when there are no results (or none left after the filters).
"""

EPILOG = """\
examples:
  python run_plot.py                                  # tables for MNIST under local_data/
  python run_plot.py --save                           # and figures into local_data/MNIST/figures/
  python run_plot.py --dataset svhn --imbalance-ratios 100 --unsupervised 1 --save
  python run_plot.py --only random varR-E4-K32 pfk-phat-L80 --save --figures paper_figs
  python run_plot.py --dataset cifar10 --out local_data/tavaal --save   # TA-VAAL's benchmark (run.py --protocol tavaal)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="local_data",
                        help="folder that run.py wrote into; results are read from {out}/{DATASET}/run*/ "
                             "(default: %(default)s)")
    parser.add_argument("--dataset", default="mnist", choices=sorted(report.DATASET_DIRS),
                        help="dataset whose results to read (default: %(default)s)")
    parser.add_argument("--save", action="store_true",
                        help="write the figures (PNG and PDF) and tables (results.md, accuracy.csv, "
                             "label_saving.csv, cost.csv) into --figures")
    parser.add_argument("--figures", type=Path, default=None,
                        help="where --save writes (default: {out}/{DATASET}/figures)")
    parser.add_argument("--only", nargs="+", metavar="NAME", default=None,
                        help="draw only these configurations, e.g. --only random pfk-phat-L80 (the all-train "
                             "line is always drawn)")
    parser.add_argument("--unsupervised", type=int, choices=(0, 1), default=None,
                        help="only rotation-pretrained (1) or random-init (0) initial models "
                             "(default: both, as separate curves)")
    parser.add_argument("--imbalance-ratios", nargs="+", type=float, metavar="IR", default=None,
                        help="only these imbalance ratios, e.g. --imbalance-ratios 1 100 (default: all found)")
    parser.add_argument("--rare-classes", nargs="+", type=int, metavar="CLASS", default=None,
                        help="classes counted as rare in the selection figure (default: the classes the records "
                             "name when they all name the same, else 5-9 for mnist and svhn)")
    parser.add_argument("--metric", choices=report.METRICS, default="test_accuracy",
                        help="accuracy to draw and tabulate: test_accuracy (for ensembles the members' mean) or "
                             "ensemble_test_accuracy (the averaged prediction; test_accuracy where not an "
                             "ensemble) (default: %(default)s)")
    return parser


def load_groups(args: argparse.Namespace) -> tuple[dict, list[str]]:
    """Read, filter and group the results; return ``(groups, messages)`` where messages are warnings and notes
    to print. Raise UserError when nothing is left to show."""
    folder = Path(args.out) / report.DATASET_DIRS[args.dataset]
    paths = report.result_paths(args.out, args.dataset)
    if not paths:
        raise UserError(f"no results: nothing matches {folder}/run*/results.jsonl "
                        f"(run run.py first, or point --out/--dataset at its output)")
    records, warnings = report.read_results(paths)
    messages = [f"warning: {w}" for w in warnings]
    if not records:
        raise UserError(f"no usable results in {len(paths)} results file(s) under {folder}")
    found = sorted({r["config"] for r in records})
    kept = report.filter_records(records, args.only, args.unsupervised, args.imbalance_ratios)
    for name in args.only or []:
        if name not in found:
            messages.append(f"note: --only {name}: no such configuration (found: {', '.join(found)})")
    if not any(r["config"] != report.FULL_TRAIN for r in kept):
        raise UserError(f"no results left after the filters (--only/--unsupervised/--imbalance-ratios); "
                        f"found configurations {', '.join(found)}, imbalance ratios "
                        f"{', '.join(sorted({report.format_ratio(float(r['imbalance_ratio'])) for r in records}))}")
    groups = report.group_records(kept)
    messages += [f"note: {n}" for n in report.completeness_notes(groups)]
    return groups, messages


def tables(groups: dict, metric: str) -> tuple[str, dict[str, str]]:
    """``(Markdown text, {csv file name: CSV text})`` of the accuracy, label-saving and cost tables."""
    rows = report.summary_table(groups, metric)
    active, _ = report.split_full_train(groups)
    savings = report.label_saving({key: report.accuracy_curve(runs, metric) for key, runs in active.items()})
    costs = report.cost_table(groups)
    improvement, _ = report.improvement_table(groups, metric)
    parts = [report.format_accuracy_markdown(rows, metric)]
    if improvement:
        parts.append(report.format_improvement_markdown(improvement))
    parts += [report.format_label_saving_markdown(savings), report.format_cost_markdown(costs)]
    markdown = "\n".join(parts)
    csvs = {"accuracy.csv": report.to_csv(rows), "label_saving.csv": report.to_csv(savings),
            "cost.csv": report.to_csv(costs), "improvement.csv": report.to_csv(improvement)}
    return markdown, csvs


def draw_figures(groups: dict, dataset: str, metric: str, rare_classes: Sequence[int] | None,
                 folder: Path) -> list[Path]:
    """Draw and save the four figures of every imbalance ratio; return the written paths."""
    active, full = report.split_full_train(groups)
    colors = plots.config_colors([key.name for key in active])  # one colour per configuration in every figure
    num_classes = report.num_classes_of(active)
    name = report.DATASET_DIRS[dataset]
    metric_name = metric.replace("_", " ")
    written = []
    for ratio in report.imbalance_ratios_of(active):
        at = {key: runs for key, runs in active.items() if key.imbalance_ratio == ratio}
        ir = report.format_ratio(ratio)
        curves = {key: report.accuracy_curve(runs, metric) for key, runs in at.items()}
        full_curves = {key: report.accuracy_curve(runs, metric) for key, runs in full.items()
                       if key.imbalance_ratio == ratio}
        histograms = {key: report.selection_histogram(runs) for key, runs in at.items()}
        entropy = {key: report.entropy_curve(runs) for key, runs in at.items()}
        rare = ({key: report.rare_share_curve(runs, rare_classes) for key, runs in at.items()}
                if rare_classes else None)
        improvement = {key: report.improvement_curve(runs, at[base], metric) for key, runs in at.items()
                       if key.config != "random" and (base := report.baseline_key(at, key)) is not None}
        figures = {
            "accuracy": plots.accuracy_figure(curves, full_curves, report.pool_size_at(at, ratio),
                                              f"{name}, IR={ir}: {metric_name} (mean ± std over runs)", colors,
                                              ylabel=f"{metric_name} (%)"),
            "cost": plots.cost_figure(report.cost_table(at), f"{name}, IR={ir}: seconds per iteration"),
            "selection": plots.selection_figure(histograms, f"{name}, IR={ir}: classes selected per iteration"),
            "selection_summary": plots.selection_summary_figure(entropy, rare, num_classes, rare_classes,
                                                                f"{name}, IR={ir}: what was selected", colors),
            "accuracy_band": plots.band_figure(curves, f"{name}, IR={ir}: {metric_name} (mean, std over runs shaded)",
                                               f"{metric_name} (%)", colors),
        }
        if improvement:
            figures["improvement"] = plots.band_figure(
                improvement, f"{name}, IR={ir}: improvement over random sampling, paired by run (mean, std shaded)",
                f"{metric_name} minus random's (points)", colors, zero_line="random")
        for stem, figure in figures.items():
            written += plots.save_figure(figure, folder / f"{stem}_IR{ir}")
    return written


def write_tables(markdown: str, csvs: dict[str, str], messages: Sequence[str], folder: Path) -> list[Path]:
    """results.md (tables, then warnings and notes) and the CSV files; return the written paths."""
    text = markdown
    if messages:
        text += "\n## Warnings and notes\n\n" + "\n".join(f"- {m}" for m in messages) + "\n"
    written = []
    for file_name, content in {"results.md": text, **csvs}.items():
        save_text(content, folder / file_name)
        written.append(folder / file_name)
    return written


def run(args: argparse.Namespace) -> int:
    groups, messages = load_groups(args)
    messages += [f"note: {n}" for n in report.improvement_table(groups, args.metric)[1]]
    for message in messages:
        print(message, file=sys.stderr)
    markdown, csvs = tables(groups, args.metric)
    print(markdown)
    folder = args.figures or Path(args.out) / report.DATASET_DIRS[args.dataset] / "figures"
    if not args.save:
        print(f"(figures not drawn: add --save to write them and the tables into {folder})")
        return 0
    rare = args.rare_classes if args.rare_classes is not None else (
        report.rare_classes_in(groups) or report.DEFAULT_RARE_CLASSES.get(args.dataset))
    if not rare:
        print(f"note: no rare classes for {args.dataset}: give --rare-classes to draw their share",
              file=sys.stderr)
    written = write_tables(markdown, csvs, messages, folder)
    written += draw_figures(groups, args.dataset, args.metric, rare, folder)
    print(f"wrote {len(written)} files into {folder}: " + ", ".join(p.name for p in written))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry; returns the exit code (0, or 2 with one error line when there is nothing to show)."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
