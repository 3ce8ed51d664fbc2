"""Supervised training with a step schedule, evaluation, and rotation pretraining (Gidaris et al.).

Under ``torchrun`` training is ``DistributedDataParallel``: the protocol's batch size is the GLOBAL batch, each
global batch (drawn from the run's generator, the same on every rank) dealt out over the processes; inference is
split by whole batches over the ranks and gathered (``fkal.distributed``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import distributed as D
from .data import Schedule, TensorSource

# Extra loss added to the cross-entropy of a batch: (model, logits, taps, targets, epoch, epochs) -> loss.
# Acquisitions that train an auxiliary head (learning loss, TA-VAAL) provide one.
ExtraLoss = Callable[[nn.Module, torch.Tensor, dict, torch.Tensor, int, int], torch.Tensor]


def make_optimizer(model: nn.Module, schedule: Schedule):
    opt = torch.optim.SGD(model.parameters(), lr=schedule.lr, momentum=schedule.momentum,
                          weight_decay=schedule.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(schedule.milestones), gamma=schedule.gamma)
    return opt, sched


def train(model: nn.Module, source: TensorSource, idx: np.ndarray, labels: np.ndarray, schedule: Schedule,
          device: torch.device, generator: torch.Generator, extra_loss: Optional[ExtraLoss] = None,
          desc: str = "train", progress: bool = True,
          on_epoch_end: Optional[Callable[[int], None]] = None) -> float:
    """Train ``model`` on ``source[idx]`` with ``labels`` (aligned with idx) for ``schedule.epochs``.

    A fresh optimizer and schedule every call: the warm start of an AL iteration keeps the weights only.
    ``on_epoch_end(epoch)`` (1-based) runs after each epoch, e.g. ``KeepBestEpoch``; it may put the model in eval
    mode, training resumes in train mode. Returns the wall seconds.
    """
    start = time.perf_counter()
    labels_t = torch.as_tensor(labels, dtype=torch.long)
    opt, sched = make_optimizer(model, schedule)
    net = data_parallel(model, device)
    model.train()
    bar = tqdm(range(schedule.epochs), desc=desc, leave=False, disable=not progress or not D.is_main())
    for epoch in bar:
        total, n = 0.0, 0
        for pos, x in epoch_batches(source, idx, schedule.batch_size, generator, augment=True):
            x, y = x.to(device, non_blocking=True), labels_t[pos].to(device, non_blocking=True)
            logits, taps = net(x)
            loss = F.cross_entropy(logits, y)
            if extra_loss is not None:
                loss = loss + extra_loss(model, logits, taps, y, epoch, schedule.epochs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(pos)
            n += len(pos)
        sched.step()
        bar.set_postfix(loss=f"{total / max(n, 1):.4f}")
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1)
            model.train()
    model.eval()
    return time.perf_counter() - start


def data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` under ``DistributedDataParallel`` when several processes run (gradients averaged over the
    ranks after every backward, so the replicas stay equal), else ``model`` itself. BatchNorm keeps per-process
    batch statistics on the CPU; on GPUs it is converted to ``SyncBatchNorm`` so that the statistics are those of
    the global batch, as with one process."""
    if D.world() == 1:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def epoch_batches(source: TensorSource, idx: np.ndarray, batch_size: int, generator: torch.Generator,
                  augment: bool):
    """One epoch of shuffled batches ``(positions into idx, images)``: with one process ``source.batches``; with
    several, the same global batches (one permutation drawn from ``generator``, as ``batches`` draws it) dealt
    out over the ranks (``fkal.distributed.split_batch``), each rank reading only its share."""
    if D.world() == 1:
        yield from source.batches(idx, batch_size, shuffle=True, generator=generator, augment=augment)
        return
    order = torch.randperm(len(idx), generator=generator).numpy()
    groups = [D.split_batch(order[s:s + batch_size]) for s in range(0, len(idx), batch_size)]
    yield from source.batches_of(idx, groups, augment=augment, generator=generator)


class KeepBestEpoch:
    """Epoch selection on a labeled held-out set (``--epoch-selection val``): after each epoch ``score(model)``
    (e.g. accuracy on D_v) is computed and a copy of the best state kept; ``restore()`` loads it. Ties keep the
    earlier epoch. Scoring runs in eval mode and draws no random numbers, so training itself is unchanged.
    """

    def __init__(self, model: nn.Module, score: Callable[[nn.Module], float]):
        self.model, self.score = model, score
        self.best_score, self.best_epoch, self.best_state = -float("inf"), 0, None

    def __call__(self, epoch: int) -> None:
        self.model.eval()
        value = self.score(self.model)
        if value > self.best_score:
            self.best_score, self.best_epoch = value, epoch
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def restore(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)


@torch.no_grad()
def predict(model: nn.Module, source: TensorSource, idx: np.ndarray, device: torch.device,
            batch_size: int = 1000, desc: Optional[str] = None) -> torch.Tensor:
    """Softmax probabilities ``[len(idx), classes]`` on the CPU (on every rank: each computes its batches, then
    they are gathered)."""
    model.eval()
    out, where = [], []
    batches = D.sharded(source, idx, batch_size)
    if desc and D.is_main():
        batches = tqdm(batches, total=len(D.my_batches(len(idx), batch_size)), desc=desc, leave=False)
    for _, pos, x in batches:
        logits, _ = model(x.to(device, non_blocking=True))
        out.append(logits.float().softmax(1).cpu())
        where.append(pos)
    if not len(idx):
        return torch.empty(0)
    local = torch.cat(out) if out else torch.empty(0)
    return D.gather_rows(local, np.concatenate(where) if where else np.zeros(0, dtype=np.int64), len(idx))


@dataclass
class Accuracy:
    overall: float             # percent
    per_class: list[float]     # percent, one per class (nan where a class is absent)
    predictions: np.ndarray    # [N] predicted classes


def accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> Accuracy:
    correct = predictions == labels
    per_class = [float(100.0 * correct[labels == c].mean()) if (labels == c).any() else float("nan")
                 for c in range(num_classes)]
    return Accuracy(float(100.0 * correct.mean()), per_class, predictions)


def evaluate(model: nn.Module, source: TensorSource, idx: np.ndarray, labels: np.ndarray, num_classes: int,
             device: torch.device, batch_size: int = 1000) -> Accuracy:
    probs = predict(model, source, idx, device, batch_size)
    return accuracy(probs.argmax(1).numpy(), np.asarray(labels), num_classes)


# ----------------------------------------------------------------------------------------------------------------
# Rotation pretraining
# ----------------------------------------------------------------------------------------------------------------
def rotation_batch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image in its four rotations (0, 90, 180, 270 degrees) with targets 0..3.

    x: [B, C, H, W] (square) -> images [4B, C, H, W] ordered rotation-major, targets [4B].
    """
    rotated = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
    targets = torch.arange(4, device=x.device).repeat_interleave(len(x))
    return rotated, targets


def train_rotation(model: nn.Module, source: TensorSource, idx: np.ndarray, schedule: Schedule,
                   device: torch.device, generator: torch.Generator, desc: str = "rotation",
                   progress: bool = True) -> float:
    """Self-supervised 4-way rotation training on ``source[idx]`` (the whole unlabeled pool)."""
    start = time.perf_counter()
    opt, sched = make_optimizer(model, schedule)
    net = data_parallel(model, device)
    model.train()
    steps = -(-len(idx) // schedule.batch_size)
    quiet = not progress or not D.is_main()
    for epoch in tqdm(range(schedule.epochs), desc=desc, leave=False, disable=quiet):
        for _, x in tqdm(epoch_batches(source, idx, schedule.batch_size, generator, augment=False),
                         total=steps, desc=f"epoch {epoch + 1}", leave=False, disable=quiet):
            x, y = rotation_batch(x.to(device, non_blocking=True))
            loss = F.cross_entropy(net(x)[0], y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    return time.perf_counter() - start


@torch.no_grad()
def rotation_accuracy(model: nn.Module, source: TensorSource, idx: np.ndarray, device: torch.device,
                      batch_size: int = 1000) -> float:
    """Percent of rotated images whose rotation the model predicts (split over the ranks, counts summed)."""
    model.eval()
    counts = torch.zeros(2, dtype=torch.float64)
    for _, _, x in D.sharded(source, idx, batch_size):
        x, y = rotation_batch(x.to(device))
        counts[0] += (model(x)[0].argmax(1) == y).sum().item()
        counts[1] += len(y)
    correct, n = D.all_reduce_sum(counts).tolist()
    return 100.0 * correct / max(n, 1)


def initial_model(build, source: TensorSource, rows: np.ndarray, unsup: Optional[Schedule], device: torch.device,
                  init_seed: int, rotation_seed: int, order: torch.Generator, desc: str = "rotation pretraining",
                  progress: bool = True) -> tuple[nn.Module, float, Optional[nn.Module]]:
    """An initial model (b = 0): random weights drawn after ``torch.manual_seed(init_seed)``; with ``unsup``,
    every layer but the classifier copied from a 4-way rotation model (its own random start from
    ``rotation_seed``) trained on ``source[rows]`` in the order of ``order`` (paper section 5, Gidaris et al.).
    ``build(num_classes)`` makes the architecture. Returns ``(model, pretraining seconds, rotation model or None)``.
    ``run.py``'s initial models and the labeling rounds' are both made here."""
    from .models import copy_all_but_classifier

    torch.manual_seed(init_seed)
    model = build(None).to(device)
    if unsup is None:
        return model, 0.0, None
    torch.manual_seed(rotation_seed)
    rot = build(4).to(device)
    seconds = train_rotation(rot, source, rows, unsup, device, order, desc=desc, progress=progress)
    copy_all_but_classifier(rot, model)
    return model, seconds, rot
