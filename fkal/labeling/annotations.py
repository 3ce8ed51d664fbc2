"""Annotations back from the annotators, read and checked before anything is merged.

Two formats, told apart by the file's suffix:

* ``.csv``: ``path,label`` (a header naming both columns may carry other columns too, e.g. ``to_label.csv`` with a
  ``label`` column added, or Label Studio's CSV export); a relative path is read from the CSV's folder; a line
  with an empty label is skipped (not labeled yet).
* ``.json``: a Label Studio export. The full JSON export is a list of tasks, each with ``data`` (the fields of the
  imported task, ``data.path`` among them) and ``annotations`` (each with ``result`` holding one ``choices``
  value, and ``was_cancelled``); the JSON-MIN export is a list of flat objects with ``path`` and the choice under
  the control's name (``label``). A task whose annotations are all cancelled, or that has none, is skipped (it is
  not annotated); annotations of one task that disagree are an error.

``check`` turns the annotations into ``(image row, class index)`` pairs or raises one ``UserError`` naming the
first problem: a path that names no file, a file outside the pool (the validation images included), a label that
is not a class of the project, a path given twice or one already labeled.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..data.own_images import csv_rows, resolve
from ..errors import UserError

CONTROL = "label"          # the Choices tag's name in the labeling config (outputs.label_studio_config)


@dataclass(frozen=True)
class Annotation:
    path: Path             # resolved
    label: str             # class name
    where: str             # "file:line" or "file: task ID", for error messages


@dataclass
class Annotations:
    items: list[Annotation]
    skipped: int = 0       # images without a label: Label Studio tasks without a (non-cancelled) annotation, CSV
    #                        lines with an empty label


def read_annotations(path: str | Path) -> Annotations:
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path} does not exist: give the CSV (path,label) or the Label Studio JSON export to merge")
    if path.suffix.lower() == ".csv":
        items, skipped = [], 0
        for n, (p, label) in csv_rows(path, ("path", "label")):
            if not p:
                raise UserError(f"{path}:{n}: the path is empty")
            if not label:                    # not labeled yet (a partly filled to_label.csv, Label Studio's CSV)
                skipped += 1
                continue
            items.append(Annotation(resolve(p, path.parent), label, f"{path.name}:{n}"))
        return Annotations(items, skipped)
    if path.suffix.lower() == ".json":
        try:
            tasks = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise UserError(f"cannot read {path} as JSON: {e}") from None
        return label_studio_export(tasks, path)
    raise UserError(f"{path}: expected a .csv file (path,label) or a Label Studio JSON export (.json)")


def _choice(result: Sequence[dict], where: str) -> Optional[str]:
    """The single class name chosen in an annotation's ``result`` (None if nothing was chosen)."""
    chosen = [r for r in result if isinstance(r, dict) and r.get("type") == "choices"
              and r.get("from_name", CONTROL) == CONTROL]
    if not chosen:
        return None
    values = [c for r in chosen for c in (r.get("value") or {}).get("choices", [])]
    if len(values) != 1:
        raise UserError(f"{where}: {len(values)} classes chosen ({', '.join(map(str, values))}); choose exactly one")
    return str(values[0])


def label_studio_export(tasks, path: Path) -> Annotations:
    """Annotations of a Label Studio JSON or JSON-MIN export (a list of tasks)."""
    if not isinstance(tasks, list):
        raise UserError(f"{path}: a Label Studio export is a JSON list of tasks; export the project as JSON")
    items, skipped = [], 0
    for i, task in enumerate(tasks):
        if not isinstance(task, dict):
            raise UserError(f"{path}: item {i} is not a task object; export the project as JSON")
        where = f"{path.name}: task {task.get('id', i)}"
        if "annotations" in task or "data" in task:                      # the full JSON export
            data = task.get("data") or {}
            labels = set()
            for ann in task.get("annotations") or []:
                if ann.get("was_cancelled"):
                    continue
                label = _choice(ann.get("result") or [], where)
                if label is not None:
                    labels.add(label)
        else:                                                            # JSON-MIN: flat fields
            data = task
            value = task.get(CONTROL)
            if isinstance(value, dict):
                value = value.get("choices")
            if isinstance(value, list):
                if len(value) > 1:
                    raise UserError(f"{where}: {len(value)} classes chosen; choose exactly one")
                value = value[0] if value else None
            labels = set() if value in (None, "") else {str(value)}
        if not labels:
            skipped += 1
            continue
        if len(labels) > 1:
            raise UserError(f"{where}: its annotations disagree ({', '.join(sorted(labels))}); settle them in "
                            "Label Studio (delete or fix one) and export again")
        p = data.get("path")
        if not p:
            raise UserError(f"{where} has no data.path: import the tasks file label_next.py wrote "
                            "(round{n}/label_studio_tasks.json), which gives every task its path")
        items.append(Annotation(resolve(str(p), path.parent), labels.pop(), where))
    return Annotations(items, skipped)


def check(annotations: Sequence[Annotation], classes: Sequence[str], pool_rows: dict[str, int],
          other_rows: dict[str, str], labeled: dict[str, int]) -> list[tuple[int, int]]:
    """``(image row, class index)`` of each annotation, or a ``UserError`` for the first bad one.

    pool_rows: ``{path: row}`` of the images that may be labeled (role pool); other_rows: ``{path: role}`` of the
    project's other images (given labeled, validation); labeled: ``{path: round}`` of the labeled set.
    """
    index = {c: i for i, c in enumerate(classes)}
    seen: dict[str, str] = {}
    out = []
    for a in annotations:
        p = str(a.path)
        if p not in pool_rows:
            if p in other_rows:
                what = "a validation image" if other_rows[p] == "val" else "one of the given labeled images"
                raise UserError(f"{a.where}: {p} is {what}, outside the pool: only pool images are annotated; "
                                "remove the line")
            if a.path.exists():
                raise UserError(f"{a.where}: {p} is outside the pool (not one of the project's images): remove the "
                                "line, or fix the path to the pool image it stands for")
            raise UserError(f"{a.where}: unknown path {p} (no such file): use the paths of to_label.csv (a relative "
                            "path is read from the folder of the annotations file)")
        if a.label not in index:
            shown = ", ".join(classes[:20]) + (", ..." if len(classes) > 20 else "")
            raise UserError(f"{a.where}: unknown label name {a.label!r} for {Path(p).name}: the classes are {shown}; "
                            "fix the label")
        if p in seen:
            raise UserError(f"{a.where}: {p} is annotated twice (also at {seen[p]}): keep one line per image")
        if p in labeled:
            when = "given with the project" if labeled[p] == 0 else f"merged in round {labeled[p]}"
            raise UserError(f"{a.where}: {p} is already labeled ({when}): a duplicate; remove the line")
        seen[p] = a.where
        out.append((pool_rows[p], index[a.label]))
    if not out:
        raise UserError("the file holds no annotation: label some images first (Label Studio: submit them, then "
                        "export as JSON)")
    return out
