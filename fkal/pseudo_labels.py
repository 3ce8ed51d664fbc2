"""Pseudo-label estimators S for the unlabeled pool (paper section 4.3).

Each estimator is called per batch inside ``descriptors.extract`` with the batch's forward pass at hand:
``estimator(model, x, logits, acts, z) -> (labels [B], Fisher scores or None)``. Returning the Fisher scores
saves the backward pass when the estimator already computed them for the chosen label.

  y        true labels (the ablation ceiling; handled by passing labels to ``extract``)
  yhat     argmax of the prediction
  phat     label of the most similar validation image under R_z            (p^(y, z))
  phat-g   the same under R_zg, with the pool image's Fisher score for each candidate class
  trC      Monte Carlo: argmax_d tr(C_zg(d)) over K perturbed copies
  mi       Monte Carlo: argmax_d I(z; g(d)) = 0.5 log(|C_zz||C_gg|/|C_[z,g]|), Cholesky log-determinants
  mi-diag  the same with diagonal covariances: -0.5 sum_l log(1 - rho_l^2)

Estimators that correct p^ on an imbalanced pool (``fkal.pseudo_label_estimators``):

  phat-em     p^ softened (Parzen window on R_z) and corrected to the pool's class priors by EM
  phat-agree  a rare p^ kept only when y^ agrees, else the most similar common class
  efs         expected Fisher score under the soft p^;  efs-em  the same under the corrected soft p^
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn

from .descriptors import Estimator, per_class_fisher_scores, pool
from .kernels import Features, standardizer
from .pseudo_label_estimators import ESTIMATORS
from .pseudo_label_estimators import build as build_corrected

PSEUDO_LABELS = ("y", "yhat", "phat", "phat-g", "trC", "mi", "mi-diag") + ESTIMATORS


def yhat(model, x, logits, acts, z):
    return logits.argmax(1), None


class NearestValidation:
    """p^(y, z): the label of the validation image most similar to the pool image.

    ``val`` holds the validation features (true labels ``val_labels``) standardized by ``standardization``
    (``fkal.kernels.STANDARDIZATIONS``), which is applied to the pool image's features too.
    With ``fisher=False`` the similarity is R_z (``phat``); with ``fisher=True`` it is R_zg (``phat-g``), where
    the pool image's Fisher score is taken with each candidate class as the label and compared with the
    validation images of that class.
    """

    def __init__(self, val: Features, val_labels: torch.Tensor, num_classes: int, fisher: bool = False,
                 chunk: int = 4096, standardization: str = "unit"):
        self.val, self.val_labels, self.fisher, self.chunk = val, val_labels, fisher, chunk
        self.standardize = standardizer(standardization)
        self.val_z = torch.cat(val.z, 1)                                    # [M, L]: R_z is one product
        self.by_class = [torch.nonzero(val_labels == d).flatten() for d in range(num_classes)]

    def __call__(self, model, x, logits, acts, z):
        zu = [self.standardize(t) for t in z]
        if not self.fisher:
            return self.val_labels.to(logits.device)[self._argmax_pcc(zu)], None
        g_all = per_class_fisher_scores(logits, acts)                       # per tap [D, B, L_j]
        best = []
        for d, members in enumerate(self.by_class):
            if len(members) == 0:
                best.append(torch.full((len(x),), -float("inf"), device=logits.device))
                continue
            vz = [v[members].to(logits.device) for v in self.val.z]
            vg = [v[members].to(logits.device) for v in self.val.g]
            sim = sum((a @ b.T) * (self.standardize(c[d]) @ e.T) for a, b, c, e in zip(zu, vz, g_all, vg))  # [B, M_d]
            best.append(sim.max(1).values)
        labels = torch.stack(best, 1).argmax(1)                             # [B]
        g = [gj[labels, torch.arange(len(labels), device=labels.device)] for gj in g_all]
        return labels, g

    def _argmax_pcc(self, zu):
        zu = torch.cat(zu, 1)                                               # [B, L]
        best_v = best_i = None
        for start in range(0, len(self.val_labels), self.chunk):
            sim = zu @ self.val_z[start:start + self.chunk].to(zu.device).T  # R_z block [B, chunk]
            v, i = sim.max(1)
            i = i + start
            if best_v is None:
                best_v, best_i = v, i
            else:
                better = v > best_v
                best_v, best_i = torch.where(better, v, best_v), torch.where(better, i, best_i)
        return best_i


def perturb(x: torch.Tensor, k: int, generator: torch.Generator, max_degrees: float = 5.0,
            noise_std: float = 0.05) -> torch.Tensor:
    """K perturbed copies: uniform +-max_degrees rotation (kornia) plus Gaussian noise, ``[B,C,H,W] -> [K*B,C,H,W]``."""
    from kornia.geometry.transform import rotate

    B = len(x)
    xs = x.repeat(k, 1, 1, 1)                                                # copy-major: [K*B, C, H, W]
    angles = (torch.rand(k * B, generator=generator) * 2 - 1) * max_degrees
    xs = rotate(xs, angles.to(x.device, x.dtype))
    noise = torch.randn(xs.shape, generator=generator).to(x.device, x.dtype) * noise_std
    return xs + noise


class MonteCarlo:
    """MC estimators: per class d, statistics of (z_k, g_k(d)) over K perturbed copies of each image.

    metric "trC": tr(C_zg(d)) = sum_l cov(z_l, g_l(d)).
    metric "mi":  0.5 (log|C_zz| + log|C_gg(d)| - log|C_[z,g(d)]|), Cholesky log-determinants of the
                  ridge-regularized sample covariances (the K copies rarely outnumber the 2L dimensions).
    metric "mi-diag": the same with diagonal covariances, -0.5 sum_l log(1 - rho_l^2).
    Descriptors are the concatenation of all taps (length L).

    The perturbations of the batch with global index i are drawn from a generator seeded with ``base + i``
    (``begin_batch``), ``base`` drawn once from the given generator: an image is perturbed the same way on
    whatever rank processes its batch (``fkal.distributed``). Without ``begin_batch`` calls the given generator is
    used in sequence.
    """

    def __init__(self, metric: str, taps: tuple[str, ...], k: int, generator: torch.Generator,
                 ridge: float = 1e-3):
        assert metric in ("trC", "mi", "mi-diag")
        self.metric, self.taps, self.k, self.generator, self.ridge = metric, taps, k, generator, ridge
        self.base = int(torch.randint(2 ** 62, (1,), generator=generator))

    def begin_batch(self, index: int) -> None:
        self.generator = torch.Generator().manual_seed(self.base + index)

    def __call__(self, model: nn.Module, x, logits, acts, z):
        with torch.enable_grad():
            lk, tk = model(perturb(x.detach(), self.k, self.generator))
            ak = [tk[t] for t in self.taps]
            zk = torch.cat([pool(a).detach().float() for a in ak], 1)       # [K*B, L]
            gk = torch.cat(per_class_fisher_scores(lk, ak), 2)              # [D, K*B, L]
        B, K = len(x), self.k
        zk = zk.view(K, B, -1)                                              # [K, B, L]
        gk = gk.view(gk.shape[0], K, B, -1)                                 # [D, K, B, L]
        score = self.score(zk, gk)                                          # [D, B]
        return score.argmax(0), None

    def score(self, zk: torch.Tensor, gk: torch.Tensor) -> torch.Tensor:
        """zk: [K, B, L], gk: [D, K, B, L] -> [D, B]."""
        K = zk.shape[0]
        zc = zk - zk.mean(0, keepdim=True)
        gc = gk - gk.mean(1, keepdim=True)
        if self.metric == "trC":
            return (zc.unsqueeze(0) * gc).sum((1, 3)) / (K - 1)
        if self.metric == "mi-diag":
            var_z = zc.pow(2).sum(0) / (K - 1)                              # [B, L]
            var_g = gc.pow(2).sum(1) / (K - 1)                              # [D, B, L]
            cov = (zc.unsqueeze(0) * gc).sum(1) / (K - 1)                   # [D, B, L]
            rho2 = cov.pow(2) / (var_z.unsqueeze(0) * var_g + 1e-12)
            return -0.5 * torch.log1p(-rho2.clamp(max=1 - 1e-6)).sum(2)
        D, L = gk.shape[0], zk.shape[2]
        joint = torch.cat([zc.unsqueeze(0).expand(D, -1, -1, -1), gc], 3)   # [D, K, B, 2L]
        joint = joint.permute(0, 2, 1, 3)                                   # [D, B, K, 2L]
        cov = joint.transpose(2, 3) @ joint / (K - 1)                       # [D, B, 2L, 2L]
        scale = cov.diagonal(dim1=2, dim2=3).mean(2, keepdim=True).clamp_min(1e-12)
        cov = cov + self.ridge * scale.unsqueeze(3) * torch.eye(2 * L, device=cov.device)
        return 0.5 * (_logdet(cov[..., :L, :L]) + _logdet(cov[..., L:, L:]) - _logdet(cov))


def _logdet(c: torch.Tensor) -> torch.Tensor:
    """log|C| of symmetric positive definite matrices through Cholesky: 2 sum log diag(chol(C))."""
    return 2.0 * torch.linalg.cholesky(c.double()).diagonal(dim1=-2, dim2=-1).log().sum(-1).float()


def build_estimator(name: str, val: Optional[Features], val_labels: Optional[torch.Tensor], num_classes: int,
                    taps: tuple[str, ...], k: int, generator: torch.Generator,
                    standardization: str = "unit", rare: Sequence[int] = ()) -> Optional[Estimator]:
    """The estimator for a pseudo-label name; None for ``y`` (true labels are passed to ``extract``).
    ``standardization`` is the one ``val`` was standardized with; ``rare``: the rare classes (``phat-agree``
    only). An estimator with a ``prepare`` method needs it run over the unlabeled pool before ``extract``
    (``fkal.acquisitions.fisher_kernel.pool_descriptors`` does)."""
    if name == "y":
        return None
    if name == "yhat":
        return yhat
    if name in ("phat", "phat-g"):
        return NearestValidation(val, val_labels, num_classes, fisher=name == "phat-g",
                                 standardization=standardization)
    if name in ("trC", "mi", "mi-diag"):
        return MonteCarlo(name, taps, k, generator)
    if name in ESTIMATORS:
        return build_corrected(name, val, val_labels, num_classes, rare, standardization)
    raise ValueError(f"unknown pseudo-label estimator {name!r}: choose one of {', '.join(PSEUDO_LABELS)}")
