"""The user's own images as a data source (fkal.data.own_images) and the annotation readers
(fkal.labeling.annotations), on files the tests write."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fkal.data.own_images import (ImageCache, channel_stats, find_images, load_image, read_labeled, read_pool,
                                  stratified_share)
from fkal.errors import UserError
from fkal.labeling.annotations import Annotation, check, label_studio_export, read_annotations


def _png(path: Path, value: int, size=(8, 8), mode="L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, 0, 255 - value)).save(path)
    return path


def test_find_images_walks_any_nesting_and_keeps_only_png_and_jpeg(tmp_path):
    a = _png(tmp_path / "a" / "b" / "c" / "x.PNG", 1)
    b = _png(tmp_path / "y.jpg", 2)
    c = _png(tmp_path / "d" / "z.jpeg", 3)
    _png(tmp_path / ".hidden" / "h.png", 4)
    (tmp_path / "notes.txt").write_text("not an image")
    assert find_images(tmp_path) == sorted([a.resolve(), b.resolve(), c.resolve()])


def test_pool_csv_paths_are_read_from_the_csv_folder_with_or_without_header(tmp_path):
    x = _png(tmp_path / "imgs" / "x.png", 1)
    y = _png(tmp_path / "imgs" / "y.png", 2)
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "pool.csv").write_text("path,comment\n../imgs/x.png,first\n" + f"{y},second\n")
    assert read_pool(tmp_path / "lists" / "pool.csv") == [x.resolve(), y.resolve()]
    (tmp_path / "lists" / "bare.csv").write_text("../imgs/y.png\n\n../imgs/x.png\n")
    assert read_pool(tmp_path / "lists" / "bare.csv") == [y.resolve(), x.resolve()]


@pytest.mark.parametrize("text, message", [
    ("path,label\nimgs/x.png,\n", "label of imgs/x.png is empty"),
    ("path,label\nimgs/missing.png,cat\n", "missing.png does not exist"),
    ("path,label\nimgs/x.png,cat\nimgs/x.png,dog\n", "listed twice (also on line 2)"),
    ("file,class\nimgs/x.png,cat\n", "/file does not exist"),      # no header: 'file,class' is read as a row
])
def test_labeled_csv_errors_name_the_line_and_the_fix(tmp_path, text, message):
    _png(tmp_path / "imgs" / "x.png", 1)
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(UserError) as e:
        read_labeled(tmp_path / "labels.csv")
    assert message in str(e.value) and "labels.csv:" in str(e.value)


def test_image_folder_tree_gives_class_names_from_the_first_level(tmp_path):
    a = _png(tmp_path / "cat" / "deep" / "a.png", 1)
    b = _png(tmp_path / "dog" / "b.png", 2)
    assert read_labeled(tmp_path) == [(a.resolve(), "cat"), (b.resolve(), "dog")]
    _png(tmp_path / "loose.png", 3)
    with pytest.raises(UserError, match="not inside a class folder"):
        read_labeled(tmp_path)


def test_stratified_share_takes_a_seeded_share_of_every_class():
    labels = ["a"] * 10 + ["b"] * 5 + ["c"] * 2 + ["d"]
    picked = stratified_share(labels, 0.2, torch.Generator().manual_seed(0))
    counts = {c: sum(labels[i] == c for i in picked) for c in "abcd"}
    assert counts == {"a": 2, "b": 1, "c": 1, "d": 0}          # at least one, never all, none from a singleton
    again = stratified_share(labels, 0.2, torch.Generator().manual_seed(0))
    other = stratified_share(labels, 0.2, torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(picked, again)
    assert not np.array_equal(picked, other)
    assert np.all(np.diff(picked) > 0)


def test_load_image_converts_scales_and_center_crops(tmp_path):
    p = tmp_path / "wide.png"
    a = np.zeros((10, 30), np.uint8)
    a[:, 10:20] = 200                                            # a bright middle third
    Image.fromarray(a).save(p)
    grey = load_image(p, 10, 1)
    assert grey.shape == (1, 10, 10) and grey.dtype == np.uint8
    assert grey[0, :, 2:8].min() == 200                          # the crop is the middle
    rgb = load_image(_png(tmp_path / "c.png", 50, mode="RGB"), 4, 3)
    assert rgb.shape == (3, 4, 4) and tuple(rgb[:, 0, 0]) == (50, 0, 205)


def test_image_cache_decodes_once_and_again_when_a_file_changes(tmp_path):
    paths = [str(_png(tmp_path / f"{i}.png", 10 * i)) for i in range(5)]
    cache = ImageCache(tmp_path / "cache", 8, 1)
    first = cache.load(paths, progress=False)
    assert first.shape == (5, 1, 8, 8) and [int(first[i, 0, 0, 0]) for i in range(5)] == [0, 10, 20, 30, 40]
    stamp = cache.array_path.stat().st_mtime_ns
    cache.load(paths, progress=False)
    assert cache.array_path.stat().st_mtime_ns == stamp            # reused, not decoded again
    _png(Path(paths[2]), 99)
    os.utime(paths[2], ns=(stamp + 10**9, stamp + 10**9))
    again = cache.load(paths, progress=False)
    assert int(again[2, 0, 0, 0]) == 99


def test_channel_stats_match_numpy():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(7, 3, 5, 5), dtype=np.uint8)
    mean, std = channel_stats(pixels, np.array([0, 2, 3, 6]), chunk=3)
    x = pixels[[0, 2, 3, 6]].astype(np.float64) / 255
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(std, x.std(axis=(0, 2, 3)), rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Annotations
# ----------------------------------------------------------------------------------------------------------------
def _task(i, path, choices=None, cancelled=False, more=()):
    anns = [] if choices is None else [{"id": i, "result": [{"from_name": "label", "to_name": "image",
                                                            "type": "choices", "value": {"choices": choices}}],
                                        "was_cancelled": cancelled}]
    anns += [{"id": 100 + i, "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                         "value": {"choices": [c]}}], "was_cancelled": False} for c in more]
    return {"id": i, "annotations": anns, "predictions": [i], "data": {"image": "/x", "path": path}}


def test_label_studio_export_skips_unannotated_and_cancelled_tasks(tmp_path):
    tasks = [_task(1, "/p/a.png", ["cat"]), _task(2, "/p/b.png"), _task(3, "/p/c.png", ["dog"], cancelled=True),
             _task(4, "/p/d.png", ["dog"], more=["dog"])]
    out = label_studio_export(tasks, tmp_path / "export.json")
    assert [(str(a.path), a.label) for a in out.items] == [("/p/a.png", "cat"), ("/p/d.png", "dog")]
    assert out.skipped == 2


def test_label_studio_export_errors_on_disagreement_and_missing_path(tmp_path):
    with pytest.raises(UserError, match="disagree"):
        label_studio_export([_task(1, "/p/a.png", ["cat"], more=["dog"])], tmp_path / "e.json")
    task = _task(1, "/p/a.png", ["cat"])
    del task["data"]["path"]
    with pytest.raises(UserError, match="no data.path"):
        label_studio_export([task], tmp_path / "e.json")
    with pytest.raises(UserError, match="exactly one"):
        label_studio_export([_task(1, "/p/a.png", ["cat", "dog"])], tmp_path / "e.json")


def test_json_min_export_and_csv_annotations_are_read(tmp_path):
    (tmp_path / "min.json").write_text(json.dumps([{"id": 1, "path": "/p/a.png", "label": "cat"},
                                                   {"id": 2, "path": "/p/b.png"}]))
    out = read_annotations(tmp_path / "min.json")
    assert [(str(a.path), a.label) for a in out.items] == [("/p/a.png", "cat")] and out.skipped == 1
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ann.csv").write_text("rank,path,score,pseudo_label,probability,label\n"
                                              "1,x.png,,cat,0.5,dog\n2,y.png,,cat,0.4,\n")
    out = read_annotations(tmp_path / "sub" / "ann.csv")
    (a,) = out.items
    assert a.path == (tmp_path / "sub" / "x.png").resolve() and a.label == "dog" and out.skipped == 1


@pytest.mark.parametrize("path, label, message", [
    ("/pool/nope.png", "cat", "unknown path"),
    ("/val/v.png", "cat", "a validation image, outside the pool"),
    ("EXISTING", "cat", "outside the pool (not one of the project's images)"),
    ("/pool/a.png", "cow", "unknown label name 'cow'"),
    ("/pool/b.png", "cat", "already labeled"),
])
def test_check_names_the_first_bad_annotation(tmp_path, path, label, message):
    if path == "EXISTING":
        path = str(_png(tmp_path / "elsewhere.png", 1))
    pool = {"/pool/a.png": 0, "/pool/b.png": 1}
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check([Annotation(Path(path), label, "f.csv:2")], ["cat", "dog"], pool, {"/val/v.png": "val"},
              {"/pool/b.png": 1})


def test_check_maps_paths_and_names_and_refuses_duplicates():
    pool = {"/pool/a.png": 4, "/pool/b.png": 7}
    anns = [Annotation(Path("/pool/b.png"), "dog", "f:2"), Annotation(Path("/pool/a.png"), "cat", "f:3")]
    assert check(anns, ["cat", "dog"], pool, {}, {}) == [(7, 1), (4, 0)]
    with pytest.raises(UserError, match="annotated twice"):
        check(anns + [Annotation(Path("/pool/a.png"), "cat", "f:4")], ["cat", "dog"], pool, {}, {})
