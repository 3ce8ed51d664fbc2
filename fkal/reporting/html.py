"""One self-contained HTML page of a results folder (``run_plot.py --html``), to look at a run instead of reading
its JSONL.

The page holds the accuracy figure of every imbalance ratio, the tables ``run_plot.py`` prints (accuracy, label
saving, improvement, cost, and what --compare-at and --saving-vs-best add), the imbalance metrics at every labeled
count (at the --compare-at counts where given), the selection figure of every ratio, and a table of the
configurations with the settings that made each. Plain HTML with inline CSS: figures are PNG embedded as base64
``data:`` URLs, tables are the printed Markdown tables converted; no JavaScript, nothing fetched from anywhere.
Every configuration name in a table folds out (``<details>``) the row's settings id, what sets it apart from other
settings of its configuration (``GroupKey.variant``) and the settings in which it differs from its protocol's
defaults (``non_default_settings``).
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import reporting as report
from ..io import save_text
from ..settings import ADDED_LATER, canonical, comparable, flag_of, flatten
from . import figures as plots
from .records import settings_of

REPORT_NAME = "report.html"        # in the figures folder, beside what --save writes
# Settings that name the row or the run, or the machine it ran on: never "non-default", listed under all settings.
IDENTITY = ("seed", "data", "dataset", "config", "imbalance_ratio", "unsupervised", "device", "cuda", "world_size",
            "config_file")
NO_DEFAULT = "–"                   # a setting whose protocol has no default (shown in the default column)

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; max-width: 1400px;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.8em; }
h3 { margin-top: 1.2em; }
table { border-collapse: collapse; margin: .6em 0 1em; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } tbody tr:nth-child(even) { background: #fafafa; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: .9em; }
details.settings summary { cursor: pointer; } details.settings[open] { background: #fffbe6; }
table.settings { font-size: .85em; margin: .3em 0; } table.settings caption { text-align: left; }
code { font-size: .95em; }
p.meta, p.note { color: #555; } nav ul { columns: 2; } .warnings li { color: #8a4b00; }
"""


def write_report(groups: dict, markdown: str, messages: Sequence[str], args: argparse.Namespace,
                 folder: Path) -> Path:
    """Write the page of ``run_plot.py``'s ``args`` atomically to ``--html FILE`` (default ``folder/report.html``)
    and return its path. ``markdown`` is the printed tables, ``messages`` the printed warnings and notes."""
    path = Path(args.html) if args.html else Path(folder) / REPORT_NAME
    save_text(report_page(groups, markdown, messages, args), path)
    return path


def report_page(groups: dict, markdown: str, messages: Sequence[str], args: argparse.Namespace) -> str:
    """The whole page as text (see the module's docstring for what it holds)."""
    active, _ = report.split_full_train(groups)
    settings = SettingsIndex(active)
    ratios = report.imbalance_ratios_of(active)
    name = report.DATASET_DIRS[args.dataset]
    source = Path(args.out) / name
    sections = [("accuracy", "Accuracy curves", _figure_section(groups, args, "accuracy")),
                ("tables", "Tables", markdown_html(markdown, settings.cell, top=3))]
    if not getattr(args, "compare_at", None):
        sections.append(("imbalance", "Imbalance metrics at every labeled count",
                         markdown_html(_comparison_markdown(active, args), settings.cell, top=3)))
    sections += [("selection", "Classes selected per iteration", _figure_section(groups, args, "selection")),
                 ("configurations", "Configurations and their settings", settings.overview())]
    runs = sorted({run for runs in active.values() for run in runs})
    records = sum(len(records) for runs in groups.values() for records in runs.values())
    head = (f"<h1>{_e(name)}: active-learning results</h1>\n"
            f"<p class=\"meta\">{records} records of {len(active)} configuration rows from <code>{_e(source)}</code>; "
            f"imbalance ratios {_e(', '.join(report.format_ratio(r) for r in ratios))}; runs "
            f"{_e(', '.join(map(str, runs)))}; metric {_e(args.metric.replace('_', ' '))}.</p>\n"
            "<nav><ul>" + "".join(f"<li><a href=\"#{anchor}\">{_e(title)}</a></li>" for anchor, title, _ in sections)
            + "</ul></nav>\n")
    if messages:
        head += ("<details class=\"warnings\" open><summary>Warnings and notes "
                 f"({len(messages)})</summary><ul>" + "".join(f"<li>{_e(m)}</li>" for m in messages)
                 + "</ul></details>\n")
    body = "".join(f"<section id=\"{anchor}\">\n<h2>{_e(title)}</h2>\n{content}</section>\n"
                   for anchor, title, content in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_e(name)}: active-learning results</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            f"{head}{body}</body>\n</html>\n")


# ----------------------------------------------------------------------------------------------------------------
# Figures: the --save figures of each imbalance ratio, as embedded PNG
# ----------------------------------------------------------------------------------------------------------------
def png_bytes(figure) -> bytes:
    """A matplotlib figure as PNG bytes, at the DPI ``--save`` writes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=plots.DPI)
    return buffer.getvalue()


def img_tag(png: bytes, alt: str) -> str:
    """``<img>`` with the PNG inline (a base64 ``data:`` URL)."""
    return f"<img src=\"data:image/png;base64,{base64.b64encode(png).decode('ascii')}\" alt=\"{_e(alt)}\">"


def _figure_section(groups: dict, args: argparse.Namespace, kind: str) -> str:
    """One ``<figure>`` per imbalance ratio: ``kind`` "accuracy" (``accuracy_IR*`` of --save) or "selection"
    (``selection_IR*``)."""
    active, full = report.split_full_train(groups)
    colors = plots.config_colors([key.name for key in active])       # the colours of the --save figures
    parts = []
    for ratio in report.imbalance_ratios_of(active):
        at = {key: runs for key, runs in active.items() if key.imbalance_ratio == ratio}
        figure, caption = (accuracy_figure(at, full, ratio, args, colors) if kind == "accuracy" else
                           selection_figure(at, ratio, args))
        parts.append(f"<figure>{img_tag(png_bytes(figure), caption)}<figcaption>{_e(caption)}</figcaption></figure>\n")
    return "".join(parts)


def accuracy_figure(at: dict, full: dict, ratio: float, args: argparse.Namespace, colors: dict) -> tuple[Any, str]:
    """``(figure, caption)``: the --metric against labeled images at one ratio, as ``accuracy_IR*`` of --save."""
    metric, beside = args.metric, args.beside
    metric_name = metric.replace("_", " ")
    title = (f"{report.DATASET_DIRS[args.dataset]}, IR={report.format_ratio(ratio)}: {metric_name} "
             "(mean ± std over runs)")
    curves = {key: report.accuracy_curve(runs, metric) for key, runs in at.items()}
    full_curves = {key: report.accuracy_curve(runs, metric) for key, runs in full.items()
                   if key.imbalance_ratio == ratio}
    second = None
    if beside:
        second = {key: report.accuracy_curve(runs, beside) for key, runs in at.items()}
        second = {key: curve for key, curve in second.items()                    # drawn where it differs
                  if curve and [(p.labeled, p.mean) for p in curve] != [(p.labeled, p.mean) for p in curves[key]]}
    figure = plots.accuracy_figure(curves, {k: c for k, c in full_curves.items() if c}, report.pool_size_at(at, ratio),
                                   title, colors, ylabel=f"{metric_name} (%)", x=args.x, beside=second,
                                   beside_label=beside.replace("_", " ") if beside else "",
                                   dataset_size=report.dataset_size_at(at, ratio))
    return figure, title


def selection_figure(at: dict, ratio: float, args: argparse.Namespace) -> tuple[Any, str]:
    """``(figure, caption)``: the classes selected per iteration at one ratio, as ``selection_IR*`` of --save."""
    title = f"{report.DATASET_DIRS[args.dataset]}, IR={report.format_ratio(ratio)}: classes selected per iteration"
    return plots.selection_figure({key: report.selection_histogram(runs) for key, runs in at.items()}, title), title


def _comparison_markdown(active: dict, args: argparse.Namespace) -> str:
    """The --compare-at tables (accuracy, balanced, worst-class and rare-class accuracy, rare share) at every
    labeled count of the records."""
    counts = sorted({r["labeled"] for runs in active.values() for records in runs.values() for r in records})
    rare = args.rare_classes if args.rare_classes is not None else report.DEFAULT_RARE_CLASSES.get(args.dataset)
    rows = report.comparison_table(active, counts, rare)
    return report.format_comparison_markdown(rows) if rows else ""


# ----------------------------------------------------------------------------------------------------------------
# Markdown tables -> HTML
# ----------------------------------------------------------------------------------------------------------------
def markdown_html(text: str, cell: Callable[[str, str | None], str], top: int = 2) -> str:
    """The Markdown that ``fkal.reporting.tables`` writes (``##``/``###`` headings, paragraphs, ``- `` lists and
    pipe tables) as HTML. ``cell(text, ratio)`` renders a table cell (``ratio``: the IR of the nearest heading
    or of the row's IR column, as ``format_ratio`` writes it; None if neither). Headings move to level ``top``
    (2: as written). Each table carries its ``##`` heading as ``data-section``."""
    out, section, ratio = [], "", None
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = block.splitlines()
        if not lines:
            continue
        if all(line.startswith("|") for line in lines):
            out.append(_table_html(lines, section, ratio, cell))
        elif all(line.startswith("#") for line in lines):
            for line in lines:
                level = len(line) - len(line.lstrip("#"))
                title = line[level:].strip()
                if level <= 2:
                    section, ratio = title, None
                else:
                    found = re.search(r"\bIR=([^,\s]+)", title)
                    ratio = found.group(1) if found else None
                tag = f"h{min(6, level + top - 2)}"
                out.append(f"<{tag}>{_e(title)}</{tag}>")
        elif all(line.startswith("- ") for line in lines):
            out.append("<ul>" + "".join(f"<li>{_e(line[2:])}</li>" for line in lines) + "</ul>")
        else:
            out.append(f"<p>{_e(' '.join(lines))}</p>")
    return "\n".join(out) + "\n"


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _table_html(lines: list[str], section: str, ratio: str | None, cell: Callable[[str, str | None], str]) -> str:
    header = _cells(lines[0])
    body = [_cells(line) for line in lines[1:] if not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line.strip())]
    column = header.index("IR") if "IR" in header else None
    rows = "".join("<tr>" + "".join(f"<td>{cell(text, row[column] if column is not None else ratio)}</td>"
                                    for text in row) + "</tr>\n" for row in body)
    return (f"<table data-section=\"{_e(section)}\"><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header)
            + f"</tr></thead>\n<tbody>\n{rows}</tbody></table>")


# ----------------------------------------------------------------------------------------------------------------
# Settings: each row's settings id and what differs from its protocol's defaults
# ----------------------------------------------------------------------------------------------------------------
class SettingsIndex:
    """The configuration rows (``GroupKey``) of a report, found by the names the tables give them, with the
    settings that made each."""

    def __init__(self, active: dict):
        self.keys = list(active)
        self.settings = {key: settings_of(runs) for key, runs in active.items()}
        self.anchor = {key: f"cfg-{i}" for i, key in enumerate(self.keys)}
        self.runs = {key: len(runs) for key, runs in active.items()}
        self.counts = {key: sorted({r["labeled"] for records in runs.values() for r in records})
                       for key, runs in active.items()}
        self.by_name: dict[tuple[str | None, str], Any] = {}
        for key in self.keys:
            ratio = report.format_ratio(key.imbalance_ratio)
            for name in (report.legend_name(key.config, key.unsupervised, key.variant), key.name):
                self.by_name.setdefault((ratio, name), key)
                self.by_name[(None, name)] = None if (None, name) in self.by_name else key    # unique across ratios
        self._details: dict = {}

    def find(self, text: str, ratio: str | None):
        """The row a table cell names (at ``ratio`` when known), or None."""
        return self.by_name.get((ratio, text)) or self.by_name.get((None, text))

    def cell(self, text: str, ratio: str | None) -> str:
        """A table cell: a configuration's name folds out its settings; anything else is text."""
        key = self.find(text, ratio)
        if key is None:
            return _e(text)
        if key not in self._details:
            self._details[key] = self.details(key, full=False)
        return f"<details class=\"settings\"><summary>{_e(text)}</summary>{self._details[key]}</details>"

    def details(self, key, full: bool) -> str:
        """Settings id, what sets the row apart, the non-default settings; ``full``: every setting too, else a
        link to them."""
        settings = self.settings[key]
        parts = [f"<p>settings id <code>{_e(key.settings_id or 'not recorded')}</code>"
                 + (f"; sets it apart from other settings of {_e(key.config)}: {_e(key.variant)}"
                    if key.variant else "")
                 + "</p>"]
        if settings is None:
            parts.append("<p class=\"note\">these records carry no settings (written before they were recorded)</p>")
            return "".join(parts)
        changed = non_default_settings(settings)
        if changed:
            parts.append(_settings_table(["setting", "flag", "value", "default"],
                                         [[name, flag_of(name), _v(value), default if default == NO_DEFAULT
                                           else _v(default)] for name, value, default in changed],
                                         f"{len(changed)} setting{'s differ' if len(changed) > 1 else ' differs'}"
                                         f" from the defaults of protocol {settings.get('protocol', 'fk')} for "
                                         f"{settings.get('dataset')}"))
        else:
            parts.append("<p class=\"note\">every setting at the defaults of protocol "
                         f"{_e(settings.get('protocol', 'fk'))}</p>")
        if full:
            flat = flatten(canonical(settings))
            parts.append(f"<details><summary>all {len(flat)} settings</summary>"
                         + _settings_table(["setting", "value"], [[k, _v(v)] for k, v in sorted(flat.items())], "")
                         + "</details>")
        else:
            parts.append(f"<p><a href=\"#{self.anchor[key]}\">all settings</a></p>")
        return "".join(parts)

    def overview(self) -> str:
        """A row per configuration: its name (folding out every setting), IR, initial model, runs, labeled counts,
        settings id."""
        header = ["configuration", "IR", "initial model", "runs", "labeled counts", "settings id"]
        rows = []
        for key in self.keys:
            label = report.legend_name(key.config, key.unsupervised, key.variant)
            cells = [f"<details class=\"settings\"><summary>{_e(label)}</summary>{self.details(key, True)}</details>",
                     _e(report.format_ratio(key.imbalance_ratio)),
                     "rotation-pretrained" if key.unsupervised else _e(report.RANDOM_INIT_MARK),
                     str(self.runs[key]), _e(", ".join(map(str, self.counts[key]))),
                     f"<code>{_e(key.settings_id or '–')}</code>"]
            rows.append(f"<tr id=\"{self.anchor[key]}\">" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>\n")
        return ("<p>Click a configuration's name, here or in any table, for the settings that made it.</p>\n"
                "<table data-section=\"configurations\"><thead><tr>" + "".join(f"<th>{h}</th>" for h in header)
                + "</tr></thead>\n<tbody>\n" + "".join(rows) + "</tbody></table>\n")


def _settings_table(header: Sequence[str], rows: Sequence[Sequence[str]], caption: str) -> str:
    return ("<table class=\"settings\">" + (f"<caption>{_e(caption)}</caption>" if caption else "")
            + "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows) + "</table>")


def non_default_settings(settings: dict) -> list[tuple[str, Any, Any]]:
    """``[(setting, value, default)]`` of the recorded settings (flattened) that differ from what ``run.py
    --dataset D --protocol P`` with no other option records (``protocol_defaults``), in name order; settings
    without such a default (``NO_DEFAULT``), e.g. an acquisition's options on older code, are listed too. Left
    out: those that name the row or the run or the machine (``IDENTITY``), the settings added later at their
    earlier value (``fkal.settings.comparable``), the pretraining schedule of a random-init model (none) and empty
    option sets."""
    defaults = protocol_defaults(str(settings.get("dataset")), str(settings.get("protocol") or "fk"))
    changed = []
    for name, value in sorted(comparable(settings).items()):
        if name.split(".", 1)[0] in IDENTITY or (name == "unsup" and value is None) or value == {}:
            continue
        default = defaults.get(name, NO_DEFAULT)
        if default == NO_DEFAULT or canonical(default) != value:
            changed.append((name, value, default))
    return changed


_DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {}


def protocol_defaults(dataset: str, protocol: str) -> dict[str, Any]:
    """The flattened settings that ``run.py --dataset {dataset} --protocol {protocol}`` records when given no
    other option (the dataset's numbers, ``fkal.data.DATASETS``, under the protocol's defaults, ``fkal.protocols``;
    the acquisitions' options at their parser defaults), without what ``IDENTITY`` lists; empty for a dataset or
    protocol this code does not know."""
    if (dataset, protocol) in _DEFAULTS:
        return _DEFAULTS[(dataset, protocol)]
    from ..cli import build_parser, settings_from
    from ..data import DATASETS
    from ..protocols import PROTOCOLS, apply_to_spec, parse
    from ..state.resume import protocol_settings

    defaults: dict[str, Any] = {}
    if dataset in DATASETS and protocol in PROTOCOLS:
        import torch
        args = parse(build_parser(dataset), ["--protocol", protocol], dataset)
        spec = apply_to_spec(DATASETS[dataset], args)
        s = settings_from(args, spec, torch.device("cpu"))
        nested = {"train_size": s.train_size_or_default(), "val_size": s.val_size_or_default(),
                  "noise_ratio": s.noise_ratio, "model": spec.model, "unsup": asdict(s.unsup), "train": asdict(s.train),
                  "imbalance": {"rule": spec.imbalance, "rare_classes": list(spec.rare_classes),
                                "rare_share": spec.rare_share},
                  "query_size": s.query_size, "epoch_selection": s.epoch_selection, "eval_batch": s.eval_batch,
                  "taps": getattr(args, "taps", ADDED_LATER["taps"]),
                  "standardize": getattr(args, "standardize", ADDED_LATER["standardize"]), **protocol_settings(s)}
        defaults = {**ADDED_LATER, **flatten(canonical(nested)),
                    **{f"options.{k}": v for k, v in canonical(vars(args)).items()}}
    _DEFAULTS[(dataset, protocol)] = defaults
    return defaults


def _v(value: Any) -> str:
    """A setting's value as text: strings as they are, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)
