"""The command line of ``run_plot.py`` (``fkal-plot``): draw and tabulate active-learning results, the paper's
accuracy curves, label saving, query cost and selections.

Reads every ``{out}/{DATASET}/run*/results.jsonl`` that ``run.py`` writes, prints the tables, and with ``--save``
writes the figures (PNG and PDF) and the tables (Markdown and CSV); with ``--html`` one self-contained HTML page of
the figures, tables and settings (``fkal.reporting.html``). ``python run_plot.py --help`` says it all.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path
from typing import Sequence

from .. import reporting as report
from ..arguments import OneLineErrors, integer
from ..errors import UserError
from ..io import save_text
from . import figures as plots
from . import html as html_page
from .curves import format_saving_vs_best_markdown, saving_vs_best_table

DESCRIPTION = """\
Draw and tabulate the active-learning results of one dataset.

Reads every {out}/{DATASET}/run*/results.jsonl (one line per completed iteration, written by run.py; a
'full-train' line from run.py --full-train gives the all-train-data accuracy) and groups the lines by
configuration, imbalance ratio (IR), initial model (--unsupervised 1: rotation-pretrained, 0: random weights,
marked θ_rnd) and settings (runs made with other settings, e.g. --epoch-selection val beside final, are separate
rows named by what differs). Broken lines are skipped with a warning naming file and line; configurations with
fewer runs or iterations than the others are drawn as they are and named in one note each.

Printed (and written with --save as results.md and CSV files):
  - the --metric at every labeled count per configuration: mean ± sample std (ddof=1) over runs, number of runs;
  - with --beside METRIC: the difference --metric minus METRIC of the same records, mean ± std over runs (e.g.
    test_accuracy minus final_test_accuracy: what keeping the epoch best on D_v changed);
  - label saving against every baseline (all but pcc/pfk/pfk-sum; --baselines to choose) at every --targets
    accuracy ('final': the baseline's final mean): the labels each configuration's mean curve needs to reach it
    (linear interpolation between labeled counts) and how many fewer than the baseline's, in percent, each with a
    95% interval from a bootstrap over runs (runs shared with the baseline are resampled in pairs);
  - with --saving-vs-best C ...: at every labeled count n, the best of all other configurations there (largest
    mean --metric over runs), the labels C's mean curve needs to reach it and the saving 1 - labels / n in
    percent, with a 95% bootstrap interval over runs, and the worst-class accuracy of C and of the best other;
  - improvement over random sampling: a configuration's --metric minus random's in the same run (trial) at the
    same labeled count, mean ± std over runs (TA-VAAL's Figures 3-4; paired with the random runs of the same
    settings);
  - query (selection) and training seconds per iteration;
  - with --compare-at N ...: at each labeled count N, accuracy, balanced accuracy, worst-class and rare-class
    accuracy, the rare classes' share of the images labeled so far and the median query seconds, a row per
    configuration.

Figures (--save; PNG and PDF, one set per imbalance ratio, file names end in _IR{ratio}):
  accuracy_IR*           the --metric against labeled images, or against their share of |D| (the pool before
                         the imbalance) with --x percent as in the paper's figures (mean ± std over runs), the
                         other unit on the top axis, the all-train line dotted, random-init curves dashed,
                         --beside METRIC thin dotted
  cost_IR*               query seconds per iteration (log scale) beside training seconds
  selection_IR*          classes of the images selected at each iteration (mean over runs), one panel per
                         configuration
  selection_summary_IR*  entropy of each iteration's selected classes (TA-VAAL Fig. 7a) and the cumulative share
                         of the rare classes among the labeled images
  improvement_IR*        accuracy minus random sampling's, paired by run, mean with the std shaded (TA-VAAL
                         Figs. 3-4)
  accuracy_band_IR*      accuracy, mean with the std over runs shaded (TA-VAAL Figs. 11-12)

HTML (--html [FILE]; default {figures}/report.html, also without --save): one self-contained page (no network,
no JavaScript) with the accuracy and selection figures of every imbalance ratio as embedded PNG, the tables above,
the imbalance metrics at the --compare-at counts (default: every labeled count), and, folded under each
configuration's name, its settings id and the settings that differ from its protocol's defaults.

Legends give the paper's notation beside the configuration name, e.g. 'pfk-phat-L80  (R_zg, S=p^(y,z), L=80)'.
Records without the --metric (written before it was recorded) are left out with a note.
Exit code 2 when there are no results (or none left after the filters).
"""

EPILOG = """\
examples:
  python run_plot.py                                  # tables for MNIST under local_data/
  python run_plot.py --save                           # and figures into local_data/MNIST/figures/
  python run_plot.py --dataset svhn --imbalance-ratios 100 --unsupervised 1 --save
  python run_plot.py --only random varR-E4-K32 pfk-phat-L80 --save --figures paper_figs
  python run_plot.py --epoch-selection val --targets 85 90 final --x percent --save
  python run_plot.py --epoch-selection val --beside final_test_accuracy      # kept epoch against final epoch
  python run_plot.py --metric balanced_accuracy --targets 80 final
  python run_plot.py --epoch-selection val --imbalance-ratios 100 --compare-at 250 625 1250   # imbalance metrics
  python run_plot.py --html                           # one page: local_data/MNIST/figures/report.html
  python run_plot.py --metric balanced_accuracy --saving-vs-best pfk-phat-L80   # against the best of the others
  python run_plot.py --dataset cifar10 --out local_data/tavaal --save   # TA-VAAL's benchmark (run.py --protocol tavaal)
"""


def target(text: str) -> str:
    """argparse type of --targets: an accuracy in percent or 'final'."""
    try:
        return report.parse_target(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="local_data",
                        help="folder that run.py wrote into; results are read from {out}/{DATASET}/run*/ "
                             "(default: %(default)s)")
    parser.add_argument("--dataset", default="mnist", choices=sorted(report.DATASET_DIRS),
                        help="dataset whose results to read (default: %(default)s)")
    parser.add_argument("--save", action="store_true",
                        help="write the figures (PNG and PDF) and tables (results.md, accuracy.csv, "
                             "label_saving.csv, cost.csv, and difference.csv with --beside, saving_vs_best.csv "
                             "with --saving-vs-best) into --figures")
    parser.add_argument("--html", nargs="?", const="", default=None, metavar="FILE",
                        help="also write one self-contained HTML page (figures as embedded PNG, the tables, the "
                             "imbalance metrics, each row's settings; no network or JavaScript needed) to FILE "
                             "(default: report.html in --figures); works with or without --save")
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
    parser.add_argument("--runs", nargs="+", type=int, metavar="N", default=None,
                        help="only these runs, e.g. --runs 0 1 2 to leave out runs still under way (default: all)")
    parser.add_argument("--epoch-selection", choices=report.EPOCH_SELECTIONS, default=None,
                        help="only runs whose iterations kept the final epoch (final; also every record written "
                             "before run.py had --epoch-selection) or the epoch best on D_v (val) "
                             "(default: both, as separate rows)")
    parser.add_argument("--rare-classes", nargs="+", type=int, metavar="CLASS", default=None,
                        help="classes counted as rare in the selection figure (default: the classes the records "
                             "name when they all name the same, else 5-9 for mnist and svhn)")
    parser.add_argument("--metric", choices=report.METRICS, default="test_accuracy",
                        help="what to draw and tabulate, in percent: test_accuracy (the kept epoch's; for "
                             "ensembles the members' mean), ensemble_test_accuracy (the averaged prediction; "
                             "test_accuracy where not an ensemble), final_test_accuracy (the last epoch's, also "
                             "with --epoch-selection val), val_accuracy (on D_v), or an imbalance metric of "
                             "fkal/metrics.py (default: %(default)s)")
    parser.add_argument("--beside", choices=report.METRICS, default=None, metavar="METRIC",
                        help="a second metric drawn thin and dotted beside each curve, and a table of --metric "
                             "minus it per record (e.g. --beside final_test_accuracy: the final epoch's accuracy "
                             "beside the kept epoch's); one of " + ", ".join(report.METRICS))
    parser.add_argument("--x", choices=plots.X_AXES, default="labeled",
                        help="x axis of the curves and unit of the label-saving tables: labeled images, or their "
                             "share of |D| in percent as in the paper's figures (|D|: the pool before the "
                             "imbalance, 50,000 for MNIST, so 125 labels are 0.25%%) (default: %(default)s)")
    parser.add_argument("--targets", nargs="+", type=target, default=[report.FINAL], metavar="TARGET",
                        help="label-saving targets: accuracies in percent and/or 'final' (each baseline's final "
                             "mean), e.g. --targets 85 90 final (default: final)")
    parser.add_argument("--baselines", nargs="+", metavar="NAME", default=None,
                        help="label saving against these configurations (any, e.g. pfk-phat-L80 to compare two "
                             "settings of the method; default: every baseline, i.e. all but pcc/pfk/pfk-sum)")
    parser.add_argument("--compare-at", nargs="+", type=integer(1), metavar="LABELED", default=None,
                        help="also print, at these labeled counts, one table per count with a row per "
                             "configuration: accuracy, balanced accuracy, worst-class and rare-class accuracy "
                             "(mean ± std over runs), the rare classes' share of the images labeled so far and "
                             "the median query seconds (written as comparison.csv with --save), e.g. "
                             "--compare-at 250 625 1250")
    parser.add_argument("--saving-vs-best", nargs="+", metavar="CONFIG", default=None,
                        help="label saving of these configurations against the pointwise best of all other "
                             "configurations: at each labeled count, the labels CONFIG's mean curve needs to reach "
                             "the best other's mean --metric, the saving in percent with a 95%% bootstrap interval "
                             "over runs, and the worst-class accuracy of both (saving_vs_best.csv with --save)")
    parser.add_argument("--resamples", type=integer(100), default=report.RESAMPLES,
                        help="bootstrap resamples of the label-saving intervals (default: %(default)s)")
    parser.add_argument("--seed", type=integer(0), default=0,
                        help="seed of the bootstrap (default: %(default)s)")
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
    kept = report.filter_records(records, args.only, args.unsupervised, args.imbalance_ratios,
                                 getattr(args, "epoch_selection", None), getattr(args, "runs", None))
    for name in args.only or []:
        if name not in found:
            messages.append(f"note: --only {name}: no such configuration (found: {', '.join(found)})")
    metric = getattr(args, "metric", "test_accuracy")
    kept, notes = report.records_with(kept, metric)
    messages += [f"note: {n}" for n in notes]
    if getattr(args, "beside", None):
        messages += [f"note: {n.replace('--metric', '--beside', 1)}" for n in report.records_with(kept, args.beside)[1]]
    if not any(r["config"] != report.FULL_TRAIN for r in kept):
        selections = sorted({report.epoch_selection_of(r) for r in records if r["config"] != report.FULL_TRAIN})
        raise UserError(f"no results left after the filters (--only/--unsupervised/--imbalance-ratios/--runs/"
                        f"--epoch-selection/--metric); found configurations {', '.join(found)}, imbalance ratios "
                        f"{', '.join(sorted({report.format_ratio(float(r['imbalance_ratio'])) for r in records}))}, "
                        f"epoch selections {', '.join(selections)}")
    groups = report.group_records(kept)
    messages += [f"note: {n}" for n in report.completeness_notes(groups)]
    return groups, messages


def tables(groups: dict, args: argparse.Namespace) -> tuple[str, dict[str, str], list[str]]:
    """``(Markdown text, {csv file name: CSV text}, notes)`` of the accuracy, difference, label-saving and cost
    tables."""
    metric, beside = args.metric, args.beside
    rows = report.summary_table(groups, metric)
    costs = report.cost_table(groups)
    parts = [report.format_accuracy_markdown(rows, metric)]
    csvs = {"accuracy.csv": report.to_csv(rows)}
    notes = []
    if beside:
        difference = report.difference_table(groups, metric, beside)
        parts.append(report.format_accuracy_markdown(
            difference, title=f"{metric.replace('_', ' ')} minus {beside.replace('_', ' ')} (points)",
            note="The difference of the two within each record (the same run and iteration), then over runs."))
        csvs["difference.csv"] = report.to_csv(difference)
    if metric in report.LOWER_IS_BETTER:
        notes.append(f"no label saving for --metric {metric}: lower is better, there is no target to reach")
    else:
        active, _ = report.split_full_train(groups)
        savings = report.label_saving(active, args.targets, metric, args.baselines, args.resamples, args.seed)
        if not savings:
            notes.append("no label saving: no baseline among the configurations"
                         + (f" (--baselines {' '.join(args.baselines)})" if args.baselines else ""))
        parts.append(report.format_label_saving_markdown(savings, args.resamples, args.seed, args.x, metric))
        csvs["label_saving.csv"] = report.to_csv(savings)
    if getattr(args, "saving_vs_best", None):
        versus, versus_notes = saving_vs_best_table(report.split_full_train(groups)[0], args.saving_vs_best, metric,
                                                    args.resamples, args.seed)
        notes += versus_notes
        if versus:
            parts.append(format_saving_vs_best_markdown(versus, args.resamples, args.seed, metric))
            csvs["saving_vs_best.csv"] = report.to_csv(versus)
    improvement, improvement_notes = report.improvement_table(groups, metric)
    notes += improvement_notes
    if improvement:
        parts.append(report.format_improvement_markdown(improvement))
        csvs["improvement.csv"] = report.to_csv(improvement)
    parts.append(report.format_cost_markdown(costs))
    csvs["cost.csv"] = report.to_csv(costs)
    if getattr(args, "compare_at", None):
        rare = args.rare_classes if args.rare_classes is not None else report.DEFAULT_RARE_CLASSES.get(args.dataset)
        comparison = report.comparison_table(groups, args.compare_at, rare)
        if comparison:
            parts.append(report.format_comparison_markdown(comparison))
            csvs["comparison.csv"] = report.to_csv(comparison)
        else:
            notes.append(f"--compare-at {' '.join(map(str, args.compare_at))}: no configuration reached any of "
                         "these labeled counts")
    return "\n".join(parts), csvs, notes


def draw_figures(groups: dict, dataset: str, metric: str, rare_classes: Sequence[int] | None,
                 folder: Path, x: str = "labeled", beside: str | None = None) -> list[Path]:
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
        pool, size = report.pool_size_at(at, ratio), report.dataset_size_at(at, ratio)
        curves = {key: report.accuracy_curve(runs, metric) for key, runs in at.items()}
        full_curves = {key: report.accuracy_curve(runs, metric) for key, runs in full.items()
                       if key.imbalance_ratio == ratio}
        full_curves = {key: curve for key, curve in full_curves.items() if curve}
        second = None
        if beside:
            second = {key: report.accuracy_curve(runs, beside) for key, runs in at.items()}
            second = {key: curve for key, curve in second.items()                # drawn where it differs
                      if curve and [(p.labeled, p.mean) for p in curve] != [(p.labeled, p.mean) for p in curves[key]]}
        histograms = {key: report.selection_histogram(runs) for key, runs in at.items()}
        entropy = {key: report.entropy_curve(runs) for key, runs in at.items()}
        rare = ({key: report.rare_share_curve(runs, rare_classes) for key, runs in at.items()}
                if rare_classes else None)
        improvement = {key: report.improvement_curve(runs, at[base], metric) for key, runs in at.items()
                       if key.config != "random" and (base := report.baseline_key(at, key)) is not None}
        figures = {
            "accuracy": plots.accuracy_figure(curves, full_curves, pool,
                                              f"{name}, IR={ir}: {metric_name} (mean ± std over runs)", colors,
                                              ylabel=f"{metric_name} (%)", x=x, beside=second,
                                              beside_label=beside.replace("_", " ") if beside else "",
                                              dataset_size=size),
            "cost": plots.cost_figure(report.cost_table(at), f"{name}, IR={ir}: seconds per iteration"),
            "selection": plots.selection_figure(histograms, f"{name}, IR={ir}: classes selected per iteration"),
            "selection_summary": plots.selection_summary_figure(entropy, rare, num_classes, rare_classes,
                                                                f"{name}, IR={ir}: what was selected", colors,
                                                                x=x, dataset_size=size),
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
    markdown, csvs, notes = tables(groups, args)
    messages += [f"note: {n}" for n in notes]
    for message in messages:
        print(message, file=sys.stderr)
    print(markdown)
    folder = args.figures or Path(args.out) / report.DATASET_DIRS[args.dataset] / "figures"
    if getattr(args, "html", None) is not None:
        print(f"wrote {html_page.write_report(groups, markdown, messages, args, folder)}")
    if not args.save:
        print(f"(figures not drawn: add --save to write them and the tables into {folder})")
        return 0
    rare = args.rare_classes if args.rare_classes is not None else (
        report.rare_classes_in(groups) or report.DEFAULT_RARE_CLASSES.get(args.dataset))
    if not rare:
        print(f"note: no rare classes for {args.dataset}: give --rare-classes to draw their share",
              file=sys.stderr)
    written = write_tables(markdown, csvs, messages, folder)
    written += draw_figures(groups, args.dataset, args.metric, rare, folder, args.x, args.beside)
    print(f"wrote {len(written)} files into {folder}: " + ", ".join(p.name for p in written))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry; returns the exit code (0; 2 with one error line when there is nothing to show, the
    command line is wrong or a file cannot be written; 130 after Ctrl-C). ``--config FILE`` makes each plot of an
    experiment file (``fkal.config_files``), the flags given beside it last."""
    from .. import config_files

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        path, rest = config_files.split_config(argv)
        experiment = config_files.load(path) if path is not None else None
        plots = config_files.plot_argvs(experiment, rest) if experiment is not None else []
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    if experiment is not None:
        if not plots:
            print(f"error: --config {path} lists no plots", file=sys.stderr)
            return UserError.exit_code
        for k, plot in enumerate(plots, start=1):
            print(f"{experiment.name} plot {k}/{len(plots)}: run_plot.py {config_files.describe(plot)}")
            code = main(plot)
            if code:
                return code
        return 0
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:                 # --help, or a usage error already printed as one line
        return int(e.code or 0)
    try:
        return run(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as e:                    # --save into a folder that cannot take the files
        fix = ("free some disk space" if e.errno in (errno.ENOSPC, errno.EDQUOT) else
               "choose a folder you can write to with --figures (or --html FILE)")
        print(f"error: cannot write {e.filename or 'a file'}: {e.strerror or os.strerror(e.errno or 0)}; {fix} "
              "(files written before stay whole)", file=sys.stderr)
        return UserError.exit_code
    except KeyboardInterrupt:
        print("interrupted: the files written so far are whole", file=sys.stderr)
        return 130
