"""The image-folder loaders (``fkal.data.folder``): torchvision's formulas restated for DALI, the host's draws, the
torchvision loader kept between passes, and the DALI pipeline against the torchvision loader.

Everything but the last two tests runs on the CPU; those need a GPU and ``nvidia-dali`` and are skipped without.
The JPEG folder: 23 images with odd sides, landscape and portrait, two very elongated, written with 4:4:4 chroma
(no subsampling, so the decoders' chroma upsampling cannot differ) and smooth content (a misplaced window shows
as a large difference, decoder rounding as a small one).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.transforms as tv_transforms
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from fkal.data import folder
from fkal.data.folder import (CROP_RATIO, CROP_SCALE, CropDraws, DaliFolderSource, FolderSource, ImageFolderLoader,
                              center_crop_anchor, crop_windows, draw_crops, resize_shorter)

SIZES = [(37, 53), (53, 37), (41, 41), (45, 61), (61, 45), (33, 99), (99, 33), (17, 121), (121, 17), (39, 47),
         (47, 39), (35, 35), (57, 43), (43, 57), (63, 31), (31, 63), (49, 71), (71, 49), (13, 21), (21, 13),
         (75, 37), (37, 75), (55, 55)]                                  # (height, width), 23 images
CUDA = torch.device("cuda", 0)


def dali_imports() -> bool:
    try:
        import nvidia.dali  # noqa: F401
        return True
    except Exception:
        return False


HAVE_DALI = torch.cuda.is_available() and dali_imports()              # a CPU machine never imports DALI
needs_dali = pytest.mark.skipif(not HAVE_DALI, reason="needs a CUDA GPU and nvidia-dali")


def smooth_image(h: int, w: int, k: int) -> np.ndarray:
    """``[h, w, 3]`` uint8: sinusoids of periods 9-23 pixels, a different phase per image and channel."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    channels = [127.5 + 60 * np.sin(2 * np.pi * x / (9 + 2 * c) + k) + 60 * np.cos(2 * np.pi * y / (13 + 5 * c) - k)
                for c in range(3)]
    return np.clip(np.rint(np.stack(channels, 2)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> tuple[str, list[tuple[str, int]]]:
    """``(root, samples)`` of the 23-image folder, as ``ImageFolder`` gives them."""
    root = tmp_path_factory.mktemp("jpegs")
    samples = []
    for k, (h, w) in enumerate(SIZES):
        label = k % 2
        path = root / f"class{label}" / f"img{k:02d}.JPEG"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(smooth_image(h, w, k)).save(path, quality=95, subsampling=0)
        samples.append((str(path), label))
    return str(root), samples


def config(workers: int = 0) -> ImageFolderLoader:
    return ImageFolderLoader(folder="unused", num_classes=2, image_size=32, resize_size=36, num_workers=workers)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def collect(batches) -> list[tuple[np.ndarray, torch.Tensor]]:
    return [(p.copy(), x.clone()) for p, x in batches]


def same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(p, q) and torch.equal(x, y) for (p, x), (q, y) in zip(a, b))


# ----------------------------------------------------------------------------------------------------------------
# torchvision's formulas
# ----------------------------------------------------------------------------------------------------------------
EDGES = [(37, 53, 32), (53, 37, 32), (41, 41, 36), (17, 121, 36), (121, 17, 36), (1, 1000, 32), (1000, 1, 32),
         (375, 500, 256), (500, 375, 256), (333, 500, 256), (3, 10, 9), (10, 3, 9), (7, 10, 49), (299, 300, 256),
         (300, 299, 256), (255, 257, 256), (513, 257, 256), (9, 13, 36)]   # exact and inexact quotients


def test_resize_size_is_torchvision_resize():
    h, w, size = (np.array(c) for c in zip(*EDGES))
    for s in set(size.tolist()):
        rows = size == s
        nh, nw = resize_shorter(h[rows], w[rows], s)
        expected = [TF._compute_resized_output_size((int(a), int(b)), [s]) for a, b in zip(h[rows], w[rows])]
        assert [[int(a), int(b)] for a, b in zip(nh, nw)] == expected
    for (hh, ww, s) in EDGES[:5] + EDGES[10:14] + EDGES[17:]:          # and on images, where that stays small
        out = T.Resize(s)(Image.new("RGB", (ww, hh)))
        assert tuple(int(v) for v in resize_shorter(hh, ww, s)) == (out.height, out.width)


def coordinate_image(h: int, w: int) -> Image.Image:
    """R = column, G = row: the crop's top-left pixel says where it was cut."""
    y, x = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.stack([x, y, np.zeros_like(x)], 2).astype(np.uint8))


@pytest.mark.parametrize("h, w", [(32, 32), (33, 34), (35, 36), (37, 39), (39, 41), (45, 36), (36, 45), (255, 97)])
def test_center_crop_anchor_is_torchvision_center_crop(h, w):
    """Odd differences put the center on a half pixel: torchvision rounds it to even (2.5 -> 2, 3.5 -> 4)."""
    crop = TF.center_crop(coordinate_image(h, w), [32, 32])
    left, top, _ = crop.getpixel((0, 0))
    assert tuple(int(v) for v in center_crop_anchor(h, w, 32)) == (top, left)


class ScriptedTorch:
    """Stands in for ``torch`` inside ``torchvision.transforms.transforms`` while ``get_params`` runs on one image:
    its uniform draws return the given area fractions and log ratios (attempt by attempt), its ``randint`` the
    given positions; ``log``, ``exp`` and ``tensor`` are torch's own."""

    def __init__(self, draws: CropDraws, k: int):
        self.values = iter(np.stack([draws.area[k], draws.log_ratio[k]], 1).reshape(-1).tolist())
        self.positions = iter([draws.top[k], draws.left[k]])
        self.placed = 0
        self.log, self.exp, self.tensor = torch.log, torch.exp, torch.tensor

    def empty(self, *size):
        script = self

        class Uniform:
            def uniform_(self, low, high):
                value = np.float32(next(script.values))
                assert float(low) - 1e-6 <= value <= float(high) + 1e-6
                return torch.tensor([value], dtype=torch.float32)
        return Uniform()

    def randint(self, low, high, size):
        self.placed += 1
        return torch.tensor([low + math.floor(next(self.positions) * (high - low))])


def test_crop_windows_are_random_resized_crop_get_params(monkeypatch):
    """The same draws through torchvision's own ``get_params`` and through ``crop_windows`` give the same windows,
    both for windows found in the 10 attempts and for the central fallback."""
    sizes = [(224, 224), (375, 500), (500, 375), (37, 53), (53, 37), (17, 121), (121, 17), (10, 1000), (1000, 10),
             (1, 1), (3, 5), (50, 100), (99, 33), (300, 301)]
    n = 40 * len(sizes)
    heights = np.array([s[0] for s in sizes] * 40)
    widths = np.array([s[1] for s in sizes] * 40)
    draws = draw_crops(n, generator(0))
    ours = crop_windows(heights, widths, draws)
    placed = 0
    for k in range(n):
        script = ScriptedTorch(draws, k)
        monkeypatch.setattr(tv_transforms, "torch", script)
        expected = T.RandomResizedCrop.get_params(torch.zeros(1).expand(3, int(heights[k]), int(widths[k])),
                                                  list(CROP_SCALE), list(CROP_RATIO))
        monkeypatch.undo()
        assert tuple(ours[k].tolist()) == expected, (k, heights[k], widths[k])
        placed += script.placed == 2
    assert 0 < placed < n                                               # both branches were taken
    top, left, h, w = ours.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= heights).all() and (left + w <= widths).all()


# ----------------------------------------------------------------------------------------------------------------
# The host's draws
# ----------------------------------------------------------------------------------------------------------------
def test_draws_come_from_the_generator_alone():
    a, b = draw_crops(50, generator(5)), draw_crops(50, generator(5))
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("area", "log_ratio", "top", "left", "flip"))
    assert a.area.dtype == np.float32 and ((a.area >= CROP_SCALE[0]) & (a.area <= CROP_SCALE[1])).all()
    assert (np.abs(a.log_ratio) <= math.log(4 / 3) + 1e-6).all() and 10 < a.flip.sum() < 40
    g, h = generator(5), generator(5)
    draw_crops(50, g)
    torch.rand((50, 10, 2), generator=h), torch.rand((50, 2), generator=h, dtype=torch.float64), torch.rand(50, generator=h)
    assert torch.equal(g.get_state(), h.get_state())                   # a fixed amount, whatever the images


def test_nothing_is_drawn_without_augmentation(jpegs):
    root, samples = jpegs
    tv, dali = FolderSource(root, samples, config()), DaliFolderSource(root, samples, config(), CUDA)
    idx = np.arange(0, 23, 2)
    g = generator(1)
    state = g.get_state()
    list(tv.batches(idx, 5, generator=g))
    dali.plan(idx, 5, generator=g)
    assert torch.equal(g.get_state(), state)
    reference = generator(1)
    torch.randperm(len(idx), generator=reference)
    list(tv.batches(idx, 5, shuffle=True, generator=g))                  # a shuffle draws the permutation only
    assert torch.equal(g.get_state(), reference.get_state())


def test_the_dali_plan_holds_torchvision_numbers_and_the_torchvision_loader_s_draws(jpegs, monkeypatch):
    """No DALI needed: the plan that would be handed to the pipeline, against PIL's image sizes, torchvision's
    Resize and the windows the torchvision loader cut in the same pass with the same seed."""
    root, samples = jpegs
    dali = DaliFolderSource(root, samples, config(), CUDA)              # no CUDA call: nothing is decoded
    idx = np.array([22, 3, 17, 8, 0, 11, 5, 20, 14])
    sizes = np.array([Image.open(samples[i][0]).size[::-1] for i in idx])
    assert np.array_equal(dali.image_sizes(idx), sizes)
    plan = dali.plan(idx, 4)
    assert np.array_equal(plan.files, idx) and not plan.augment and plan.num_batches == 3
    for k, i in enumerate(idx):
        resized = T.Resize(36)(Image.open(samples[i][0]).convert("RGB"))
        assert tuple(plan.resize[k]) == (resized.height, resized.width)
    assert np.array_equal(plan.anchor, np.stack(center_crop_anchor(plan.resize[:, 0], plan.resize[:, 1], 32), 1))
    assert (plan.shape == 32).all() and not plan.flip.any()
    last = plan.batch(2)                                                # 9 = 4 + 4 + 1: padded with the last image
    assert last["resize_y"].shape == (4,) and last["anchor"].shape == (4, 2) and last["flip"].dtype == np.int32
    assert (last["anchor"] == plan.anchor[-1]).all() and (last["resize_x"] == plan.resize[-1, 1]).all()

    cut = []
    original = folder.TF.resized_crop
    monkeypatch.setattr(folder.TF, "resized_crop", lambda img, *a, **k: (cut.append(a[:4]), original(img, *a, **k))[1])
    list(FolderSource(root, samples, config()).batches(idx, 4, shuffle=True, generator=generator(3), augment=True))
    plan = DaliFolderSource(root, samples, config(), CUDA).plan(idx, 4, shuffle=True, generator=generator(3),
                                                                augment=True)
    g = generator(3)
    order = torch.randperm(len(idx), generator=g).numpy()
    windows = crop_windows(sizes[order, 0], sizes[order, 1], draw_crops(len(idx), g))
    assert np.array_equal(plan.order, order) and np.array_equal(plan.files, idx[order])
    assert np.array_equal(np.concatenate([plan.anchor, plan.shape], 1), windows)
    assert [tuple(w) for w in windows.tolist()] == cut                  # the torchvision loader cut the same windows
    assert (plan.resize == 32).all()
    # the same seed, the same plan, whatever was planned before
    dali.plan(idx, 7, shuffle=True, generator=generator(9), augment=True)
    again = dali.plan(idx, 4, shuffle=True, generator=generator(3), augment=True)
    assert all(np.array_equal(getattr(plan, f), getattr(again, f)) for f in ("files", "anchor", "shape", "flip"))


# ----------------------------------------------------------------------------------------------------------------
# The torchvision loader
# ----------------------------------------------------------------------------------------------------------------
def test_training_batches_are_random_resized_crop_and_flip_with_the_host_s_draws(jpegs, monkeypatch):
    root, samples = jpegs
    idx = np.arange(23)
    got = collect(FolderSource(root, samples, config()).batches(idx, 6, shuffle=True, generator=generator(4),
                                                                augment=True))
    g = generator(4)
    order = torch.randperm(23, generator=g).numpy()
    draws = draw_crops(23, g)
    sizes = np.array([SIZES[i] for i in order])
    windows = crop_windows(sizes[:, 0], sizes[:, 1], draws)
    normalize = T.Compose([T.ToTensor(), T.Normalize(config().mean, config().std)])
    expected = []
    for k, i in enumerate(order):
        crop = T.RandomResizedCrop(32)                                   # torchvision's own transform ...
        monkeypatch.setattr(crop, "get_params", lambda *a, w=tuple(windows[k].tolist()): w)   # ... with the window
        image = crop(Image.open(samples[i][0]).convert("RGB"))
        expected.append(normalize(T.RandomHorizontalFlip(p=float(draws.flip[k]))(image)))
    assert np.array_equal(np.concatenate([p for p, _ in got]), order)
    assert torch.equal(torch.cat([x for _, x in got]), torch.stack(expected))
    assert 0 < draws.flip.sum() < 23


def test_the_torchvision_loader_keeps_its_dataloader_and_workers(jpegs):
    root, samples = jpegs
    idx = np.arange(23)[::-1].copy()
    source = FolderSource(root, samples, config(workers=2))

    def passes():
        return [collect(source.batches(idx, 5, shuffle=True, generator=generator(8), augment=True)),
                collect(source.batches(idx, 7))]
    first = passes()
    loader = source._kept[0]
    workers = [w.pid for w in loader._iterator._workers]
    second = passes()
    assert source._kept[0] is loader and [w.pid for w in loader._iterator._workers] == workers
    assert all(w.is_alive() for w in loader._iterator._workers) and len(workers) == 2
    assert all(same(a, b) for a, b in zip(first, second))
    assert [len(p) for p, _ in first[0]] == [5, 5, 5, 5, 3] and first[0][0][1].shape == (5, 3, 32, 32)
    in_process = FolderSource(root, samples, config(workers=0))          # the numbers do not depend on the workers
    assert same(collect(in_process.batches(idx, 5, shuffle=True, generator=generator(8), augment=True)), first[0])


def test_a_pass_inside_another_pass_gets_its_own_loader(jpegs):
    root, samples = jpegs
    outer_idx, inner_idx = np.arange(0, 23, 2), np.arange(1, 23, 2)
    reference = FolderSource(root, samples, config())
    expected_outer = collect(reference.batches(outer_idx, 4))
    expected_inner = collect(reference.batches(inner_idx, 3, shuffle=True, generator=generator(2), augment=True))
    source = FolderSource(root, samples, config())
    outer = source.batches(outer_idx, 4)
    got_outer = [tuple(v.clone() if torch.is_tensor(v) else v.copy() for v in next(outer))]
    got_inner = collect(source.batches(inner_idx, 3, shuffle=True, generator=generator(2), augment=True))
    got_outer += collect(outer)
    assert same(got_outer, expected_outer) and same(got_inner, expected_inner)
    assert same(collect(source.batches(outer_idx, 4)), expected_outer)   # and the kept loader is free again


def test_explicit_batches_cut_each_image_as_a_plain_pass_does(jpegs):
    """batches_of (a rank's shares of the global training batches) takes each image's own draws of the pass:
    the images equal those of batches() with the same generator, whatever the grouping."""
    root, samples = jpegs
    idx = np.arange(23)[::-1].copy()
    source = FolderSource(root, samples, config())
    plain = collect(source.batches(idx, 23, generator=generator(5), augment=True))     # no shuffle: crops only
    groups = [np.array([4, 0]), np.array([22]), np.array([7, 3, 11])]
    shares = collect(source.batches_of(idx, groups, augment=True, generator=generator(5)))
    assert [p.tolist() for p, _ in shares] == [g.tolist() for g in groups]
    for pos, x in shares:
        assert torch.equal(x, plain[0][1][pos])
    evaluation = collect(source.batches_of(idx, groups))
    assert torch.equal(evaluation[2][1], source.get(idx[groups[2]]))


# ----------------------------------------------------------------------------------------------------------------
# DALI (needs a GPU and nvidia-dali)
# ----------------------------------------------------------------------------------------------------------------
def levels(x: torch.Tensor) -> torch.Tensor:
    """Normalized images back in 0-255 pixel levels."""
    std = torch.tensor(config().std, device=x.device).view(1, -1, 1, 1)
    return x * std * 255.0


@needs_dali
def test_dali_and_torchvision_give_the_same_batches_up_to_the_decoders(jpegs):
    root, samples = jpegs
    tv = FolderSource(root, samples, config(workers=2), CUDA)
    dali = DaliFolderSource(root, samples, config(workers=2), CUDA)
    idx = np.arange(23)[::-1].copy()
    for shuffle, augment in ((False, False), (True, True)):
        a = list(tv.batches(idx, 5, shuffle, generator(11), augment))
        b = list(dali.batches(idx, 5, shuffle, generator(11), augment))
        assert [len(p) for p, _ in b] == [5, 5, 5, 5, 3]
        assert all(np.array_equal(p, q) for (p, _), (q, _) in zip(a, b))
        xa = torch.cat([x for _, x in a]).to(CUDA)
        xb = torch.cat([x for _, x in b])
        assert xb.device == CUDA and xb.dtype == torch.float32 and xb.shape == xa.shape == (23, 3, 32, 32)
        diff = levels(xa - xb).abs()
        worst, mean = float(diff.max()), float(diff.mean())
        assert mean <= 2.0 and worst <= 16.0, f"augment={augment}: largest difference {worst:.1f} levels, mean {mean:.2f}"


@needs_dali
def test_dali_gives_the_same_batches_twice_with_one_seed(jpegs):
    root, samples = jpegs
    dali = DaliFolderSource(root, samples, config(workers=2), CUDA)
    idx = np.arange(23)
    first = collect(dali.batches(idx, 5, True, generator(3), True))
    collect(dali.batches(idx, 7, True, generator(99), True))            # another pass in between
    second = collect(dali.batches(idx, 5, True, generator(3), True))
    fresh = collect(DaliFolderSource(root, samples, config(workers=2), CUDA).batches(idx, 5, True, generator(3), True))
    assert same(first, second) and same(first, fresh)
    assert same(collect(dali.batches(idx, 5)), collect(dali.batches(idx, 5)))
