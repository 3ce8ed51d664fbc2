"""What a round writes for the annotators: the list of images to label, the Label Studio import file and its
labeling config, and a contact sheet. Pure functions of the picks (text, objects, an image); the caller writes
them atomically.

Label Studio formats (labelstud.io/guide/predictions and /guide/task_format): a task is ``{"data": {...},
"predictions": [{"model_version", "score", "result": [{"from_name", "to_name", "type": "choices",
"value": {"choices": [name]}}]}]}``; ``from_name`` / ``to_name`` are the names of the Choices and Image tags of
the labeling config. Each task also carries ``data.path`` (the image's absolute path), which Label Studio keeps
in its exports, so the merge maps an annotation back to its image without parsing URLs.
"""
from __future__ import annotations

import base64
import csv
import io
import math
import mimetypes
import os
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import numpy as np

from .annotations import CONTROL

IMAGE_TAG = "image"
LOCAL_FILES_URL = "/data/local-files/?d="     # Label Studio's local-files route (relative to its document root)


def to_label_csv(paths: Sequence[str], scores: Optional[np.ndarray], pseudo: Sequence[str],
                 probability: np.ndarray) -> str:
    """``rank,path,score,pseudo_label,probability``, one line per pick in the acquisition's order (rank 1 first).
    ``score`` is empty when the acquisition gives none."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["rank", "path", "score", "pseudo_label", "probability"])
    for i, (p, name, prob) in enumerate(zip(paths, pseudo, probability)):
        score = "" if scores is None else f"{float(scores[i]):.6g}"
        w.writerow([i + 1, p, score, name, f"{float(prob):.4f}"])
    return buf.getvalue()


def label_studio_config(classes: Sequence[str]) -> str:
    """The labeling config: the image and one single-choice question over the class names."""
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in classes)
    return (f'<View>\n  <Image name="{IMAGE_TAG}" value="${IMAGE_TAG}" zoom="true"/>\n'
            f'  <Choices name="{CONTROL}" toName="{IMAGE_TAG}" choice="single" showInline="true">\n'
            f"{choices}\n  </Choices>\n</View>\n")


def image_url(path: str, document_root: Optional[str], inline: bool) -> str:
    """How Label Studio finds an image: a ``data:`` URI holding the file (``inline``), or its local-files URL
    ``/data/local-files/?d={path relative to the document root}`` (Label Studio started with
    ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true`` and ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` = that root)."""
    if inline:
        mime = mimetypes.guess_type(path)[0] or "image/png"
        return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode()}"
    rel = os.path.relpath(path, document_root)
    return LOCAL_FILES_URL + quote(Path(rel).as_posix(), safe="/")


def label_studio_tasks(paths: Sequence[str], pseudo: Sequence[str], probability: np.ndarray, round_n: int,
                       model_version: str, document_root: Optional[str], inline: bool = False) -> list[dict]:
    """One task per picked image (in rank order); the pseudo-label is a prediction an annotator accepts or fixes."""
    tasks = []
    for rank, (p, name, prob) in enumerate(zip(paths, pseudo, probability), start=1):
        tasks.append({
            "data": {IMAGE_TAG: image_url(p, document_root, inline), "path": p, "rank": rank, "round": round_n},
            "predictions": [{
                "model_version": model_version,
                "score": round(float(prob), 4),
                "result": [{"from_name": CONTROL, "to_name": IMAGE_TAG, "type": "choices",
                            "value": {"choices": [name]}}],
            }],
        })
    return tasks


def contact_sheet(images: np.ndarray, captions: Sequence[str], title: str, columns: int = 10,
                  cell: int = 96):
    """A PIL image: the picks ``images`` (uint8 ``[P, C, S, S]``, C = 1 or 3) in rank order, ``columns`` a row,
    each scaled to ``cell`` pixels with its caption below, and a title line on top."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    line = 14
    n = len(images)
    columns = max(1, min(columns, n))
    rows = max(1, math.ceil(n / columns))
    pad = 4
    width = columns * (cell + pad) + pad
    sheet = Image.new("RGB", (max(width, 320), line + pad + rows * (cell + line + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, pad // 2), title, fill="black", font=font)
    for i in range(n):
        a = images[i]
        im = Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)).convert("RGB")
        resample = Image.Resampling.NEAREST if im.width * 2 <= cell else Image.Resampling.BILINEAR
        im = im.resize((cell, cell), resample)
        x = pad + (i % columns) * (cell + pad)
        y = line + pad + (i // columns) * (cell + line + pad)
        sheet.paste(im, (x, y))
        text = captions[i]
        while len(text) > 3 and draw.textlength(text, font=font) > cell:
            text = text[:-2] + "~"
        draw.text((x, y + cell + 1), text, fill="black", font=font)
    return sheet
