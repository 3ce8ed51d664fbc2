"""Pseudo-label estimators that correct p^(y, z) on a class-imbalanced pool.

p^(y, z) (``fkal.pseudo_labels.NearestValidation``) labels a pool image with the class of its most similar
validation image under R_z. The validation set is balanced (about 1,000 images per class) while the pool is not
(at IR = 100 the five rare MNIST classes hold 1% of it), so p^ is a nearest-neighbour classifier fitted under the
wrong class priors: wherever a rare and a common class overlap, p^ says "rare" about as often as "common", while
the image is common 99 times in 100. On MNIST at IR = 100 (run 0, b = 1), 1,856 pool images carry a rare
p^ label and 234 of them are rare (the pool holds 255 rare images).

The estimators here keep p^'s evidence (similarities to labeled validation images) and correct its priors or its
trust:

  phat-em     Saerens-Latinne-Decaestecker EM: the pool's class priors re-estimated from a soft p^, the soft p^
              re-weighted by them, label = argmax.                                  (``PriorCorrected``)
  phat-agree  a rare p^ label is kept only when the classifier's y^ agrees; otherwise the most similar common
              class under R_z.                                                      (``AgreementFilter``)
  efs         expected Fisher score g = sum_d q(d|x) g(d) under the soft p^ q.   (``ExpectedFisher``)
  efs-em      the same under the prior-corrected soft p^.                           (``ExpectedFisher``)

The soft p^ is a Parzen-window (kernel) classifier on the validation set with the kernel exp(R_z / tau): the
class-conditional density of x under class d is estimated by (1 / n_d) sum_{v in d} exp(R_z(x, v) / tau), so its
posterior under the validation priors n_d / M is

    q(d | x) = sum_{v in d} exp(R_z(x, v) / tau) / sum_v exp(R_z(x, v) / tau),

which tends to p^'s one-hot label as tau -> 0. R_z is a sum over scales of Pearson correlations of standardized
descriptors, so exp(R_z / tau) is a product of von Mises-Fisher kernels, one per scale. tau is chosen on the
validation set by leave-one-out likelihood (``fit_temperature``), which calibrates q for the validation priors:
that calibration is what the prior correction of Saerens et al. assumes.

Estimators that need the whole pool first (the EM ones) have a ``prepare(model, source, idx, taps, device,
batch_size)`` step that the caller runs once before ``fkal.descriptors.extract``: one forward pass over the
unlabeled pool (descriptors only, no backward) and one [N_pool, M] similarity product with the validation set,
which is the same product p^ itself costs, plus exponentials of it; EM then works on the [N_pool, D] posteriors
(milliseconds). The soft p^ also costs the fit of tau once per query (three passes of a 2,000 x M product).
On MNIST at IR = 100 (25,800 unlabeled images, M = 10,000, L = 80; one loaded two-core CPU, so only the ratios
mean much): labelling the pool with p^ (its pass with the backward) took 42 s; phat-em took 38 s to fit tau,
61 s to prepare and 49 s for its pass, about 3.5 times p^'s cost; a whole pfk query went from 66 s (pfk-phat-L80)
to 216 s (pfk-phat-em-L80). efs needs the soft posterior where p^ needs an argmax, and the same single backward
pass.

``rare_precision_recall`` measures pseudo-labels against true labels on a set of rare classes.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .descriptors import extract, pool
from .kernels import Features, standardizer

ESTIMATORS = ("phat-em", "phat-agree", "efs", "efs-em")
TAU_GRID = tuple(float(t) for t in np.geomspace(0.002, 1.0, 9))


# ----------------------------------------------------------------------------------------------------------------
# Pure functions on tensors
# ----------------------------------------------------------------------------------------------------------------
def _block_class_lse(s: torch.Tensor, labels: torch.Tensor, num_classes: int,
                     taus: Sequence[float]) -> torch.Tensor:
    """Per-class log-sum-exp of one block of similarities divided by each tau: ``s [B, c]``, ``labels [c]`` ->
    ``[G, B, D]`` float64 (-inf for a class absent from the block). The exponentials are float32, after the row
    maximum is taken out: a class whose members all lie more than 87 tau below the row's best gets -inf."""
    m = s.max(1, keepdim=True).values.clamp_min(-3e38)                             # [B, 1], finite
    d = (s - m).float()                                                            # [B, c], <= 0
    onehot = torch.nn.functional.one_hot(labels, num_classes).float()              # [c, D]
    out = []
    for tau in taus:
        out.append((torch.exp(d * (1.0 / tau)) @ onehot).double().log() + m.double() / tau)
    return torch.stack(out)


def class_log_kernel_sums(zu: torch.Tensor, val_z: torch.Tensor, val_labels: torch.Tensor, num_classes: int,
                          tau: float, chunk: int = 4096) -> torch.Tensor:
    """log sum_{v in d} exp(R_z(x, v) / tau) for every row x of ``zu`` and class d: ``[B, D]``.

    zu: [B, L] and val_z: [M, L], both standardized per scale and concatenated (so zu @ val_z.T is R_z).
    The validation set is streamed in chunks; a class without validation images gets -inf.
    """
    out = torch.full((len(zu), num_classes), -float("inf"), dtype=torch.float64, device=zu.device)
    for start in range(0, len(val_labels), chunk):
        s = zu @ val_z[start:start + chunk].to(zu.device).T                       # [B, c]
        out = torch.logaddexp(out, _block_class_lse(s, val_labels[start:start + chunk].to(zu.device), num_classes,
                                                    (tau,))[0])
    return out


def parzen_posterior(log_sums: torch.Tensor) -> torch.Tensor:
    """The soft p^ q(d|x) under the validation priors, from ``class_log_kernel_sums``: ``[B, D] -> [B, D]``."""
    return log_sums.softmax(1)


def loo_log_likelihood(val_z: torch.Tensor, val_labels: torch.Tensor, num_classes: int, taus: Sequence[float],
                       rows: torch.Tensor, chunk: int = 4096) -> np.ndarray:
    """Mean leave-one-out log-likelihood of the true labels of validation images ``rows`` under the soft p^ built
    from all the other validation images, for every tau: ``[len(taus)]``. One pass over the validation set
    serves all taus; a log-likelihood is floored at -1e4 where the true class underflows."""
    rows = rows.to(val_z.device)
    z, y = val_z[rows], val_labels.to(val_z.device)[rows]
    labels = val_labels.to(val_z.device)
    lse = torch.full((len(taus), len(rows), num_classes), -float("inf"), dtype=torch.float64, device=val_z.device)
    for start in range(0, len(labels), chunk):
        s = z @ val_z[start:start + chunk].T                                      # [R, c]
        inside = (rows >= start) & (rows < start + s.shape[1])
        s[torch.nonzero(inside).flatten(), rows[inside] - start] = -float("inf")  # leave the image itself out
        lse = torch.logaddexp(lse, _block_class_lse(s, labels[start:start + chunk], num_classes, taus))
    logp = lse.log_softmax(2).gather(2, y.view(1, -1, 1).expand(len(taus), -1, 1))[..., 0]   # [G, R]
    return logp.clamp_min(-1e4).mean(1).cpu().numpy()


def fit_temperature(val_z: torch.Tensor, val_labels: torch.Tensor, num_classes: int,
                    grid: Sequence[float] = TAU_GRID, max_rows: int = 2000, refine: int = 2,
                    chunk: int = 4096) -> tuple[float, np.ndarray]:
    """tau of the soft p^ that maximizes the leave-one-out log-likelihood of the validation labels.

    Up to ``max_rows`` validation images (evenly spaced, no randomness) are each classified by all the other
    validation images. The best of ``grid`` is refined ``refine`` times by a grid of 7 values spanning its two
    neighbours (log-spaced). The EM prior estimate is sensitive to this choice: the soft p^ must be calibrated.
    Returns the best tau and the log-likelihoods of ``grid`` ``[G]``.
    Cost: (1 + refine) passes of a max_rows x M similarity product, len(grid) + 7 refine exponentials of each.
    """
    rows = torch.as_tensor(np.linspace(0, len(val_labels) - 1, min(max_rows, len(val_labels))).round(),
                           dtype=torch.long).unique()
    taus = [float(t) for t in grid]
    ll = loo_log_likelihood(val_z, val_labels, num_classes, taus, rows, chunk)
    coarse = ll
    for _ in range(refine if len(taus) > 1 else 0):
        i = int(np.argmax(ll))
        lo, hi = taus[max(i - 1, 0)], taus[min(i + 1, len(taus) - 1)]
        taus = [float(t) for t in np.geomspace(lo, hi, 7)]
        ll = loo_log_likelihood(val_z, val_labels, num_classes, taus, rows, chunk)
    return taus[int(np.argmax(ll))], coarse


def prior_shift(post: torch.Tensor, train_priors: torch.Tensor, new_priors: torch.Tensor) -> torch.Tensor:
    """Posteriors of a classifier fitted under ``train_priors`` re-weighted to ``new_priors`` (Saerens et al.
    2002, eq. 2.4): p(d|x) proportional to (new(d) / train(d)) p_t(d|x). ``post [N, D]`` -> ``[N, D]``."""
    w = new_priors.double() / train_priors.double().clamp_min(1e-300)
    adj = post.double() * w
    return adj / adj.sum(1, keepdim=True).clamp_min(1e-300)


def em_priors(post: torch.Tensor, train_priors: torch.Tensor, max_iter: int = 2000,
              tol: float = 1e-7) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The pool's class priors by EM (Saerens, Latinne and Decaestecker, Neural Computation 2002).

    Start from the training priors; E-step: adjust every posterior to the current priors (eq. 2.4);
    M-step: the new priors are the mean adjusted posterior. Each step increases the likelihood of the new data
    under the mixture sum_d prior(d) p(x|d) with p(x|d) fixed (the classifier's). Stops when no prior moves by
    more than ``tol``. ``post [N, D]``, ``train_priors [D]`` -> ``(priors [D], adjusted posteriors [N, D],
    iterations)``.
    """
    priors = train_priors.double().clone()
    adj = post.double()
    for it in range(1, max_iter + 1):
        adj = prior_shift(post, train_priors, priors)                             # E-step
        new = adj.mean(0)                                                         # M-step
        done = float((new - priors).abs().max()) < tol
        priors = new
        if done:
            break
    return priors, prior_shift(post, train_priors, priors), it


def class_max_similarity(zu: torch.Tensor, val_z: torch.Tensor, val_labels: torch.Tensor, num_classes: int,
                         chunk: int = 4096) -> torch.Tensor:
    """max_{v in d} R_z(x, v) for every row x and class d: ``[B, D]`` (-inf for a class with no validation image).
    The argmax over d is p^(y, z)."""
    out = torch.full((len(zu), num_classes), -float("inf"), device=zu.device)
    for start in range(0, len(val_labels), chunk):
        s = zu @ val_z[start:start + chunk].to(zu.device).T                       # [B, c]
        idx = val_labels[start:start + chunk].to(zu.device).expand(len(zu), -1)
        out = out.scatter_reduce(1, idx, s.float(), reduce="amax")
    return out


def agreement_labels(best: torch.Tensor, yhat: torch.Tensor, rare: torch.Tensor) -> torch.Tensor:
    """phat-agree from per-class best similarities ``best [B, D]``, the classifier's ``yhat [B]`` and the rare
    class mask ``rare [D]``: p^ = argmax best; a rare p^ that yhat contradicts becomes the most similar common
    class. Returns ``[B]``."""
    phat = best.argmax(1)
    if bool(rare.all()):
        return phat
    rare = rare.to(best.device)
    reject = rare[phat] & (yhat != phat)
    fallback = best.masked_fill(rare.unsqueeze(0), -float("inf")).argmax(1)
    return torch.where(reject, fallback, phat)


def soft_label_fisher_scores(logits: torch.Tensor, acts: Sequence[torch.Tensor], q: torch.Tensor,
                             retain_graph: bool = False) -> list[torch.Tensor]:
    """Expected Fisher score sum_d q(d|x) g(d) per tap, pooled: ``[B, L_j]``.

    g(d) = phi(dL(1_d, y^)/dZ) and dL(1_d)/dlogits = softmax(logits) - 1_d, so by linearity the expectation is
    the pull-back of softmax(logits) - q: one backward pass, not one per class. Under q = softmax(logits) it is
    exactly zero (the score has zero mean under the model's own distribution), which is why q must come from
    elsewhere (here the soft p^).
    """
    upstream = logits.detach().float().softmax(1) - q.to(logits.device).float()     # [B, D]
    grads = torch.autograd.grad(logits, list(acts), grad_outputs=upstream.to(logits.dtype),
                                retain_graph=retain_graph)
    return [pool(g) for g in grads]


def rare_precision_recall(pseudo: np.ndarray, true: np.ndarray, rare: Sequence[int]) -> dict:
    """How pseudo-labels treat a set of rare classes, the rare classes taken together.

    precision: the share of rare pseudo-labels given to truly rare images (any rare class counts);
    recall: the share of truly rare images that got a rare pseudo-label; also the counts and the overall
    accuracy (percent). precision is nan when no image got a rare pseudo-label, recall when none is rare.
    ``fkal.metrics.pseudo_label_rare_scores`` (what the loop records) counts a hit only where the rare
    pseudo-label is the image's own class; the two differ by rare images given another rare class.
    """
    pseudo, true = np.asarray(pseudo), np.asarray(true)
    pr, tr = np.isin(pseudo, list(rare)), np.isin(true, list(rare))
    both = int((pr & tr).sum())
    return {"precision": both / pr.sum() if pr.any() else float("nan"),
            "recall": both / tr.sum() if tr.any() else float("nan"),
            "rare_pseudo": int(pr.sum()), "rare_true": int(tr.sum()), "rare_both": both,
            "accuracy": float(100.0 * (pseudo == true).mean()) if len(true) else float("nan")}


# ----------------------------------------------------------------------------------------------------------------
# Estimators: estimator(model, x, logits, acts, z) -> (labels [B], Fisher scores per tap or None)
# ----------------------------------------------------------------------------------------------------------------
class _ValidationMatch:
    """Standardized validation descriptors (concatenated over scales) and their labels."""

    standardization = "unit"    # how val was standardized (``--standardize``); the pool's rows get the same

    def __init__(self, val: Features, val_labels: torch.Tensor, num_classes: int, chunk: int = 4096):
        self.val_z = torch.cat(val.z, 1)                                          # [M, L]
        self.val_labels = torch.as_tensor(val_labels, dtype=torch.long).to(self.val_z.device)
        self.num_classes, self.chunk = num_classes, chunk

    def pool_z(self, z: Sequence[torch.Tensor]) -> torch.Tensor:
        """Pooled descriptors of a batch, per scale -> standardized as val and concatenated ``[B, L]``."""
        how = standardizer(self.standardization)
        return torch.cat([how(t.float()) for t in z], 1)


class PriorCorrected(_ValidationMatch):
    """``phat-em``: the soft p^ corrected to the pool's class priors estimated by EM.

    Reference: M. Saerens, P. Latinne and C. Decaestecker, "Adjusting the outputs of a classifier to new a priori
    probabilities: a simple procedure", Neural Computation 14(1), 2002.

    What is corrected is the soft p^ q(d|x) (module docstring), not the classifier's softmax:
    * Saerens et al. assume a classifier whose class-conditional densities p(x|d) hold on the new data and whose
      training priors are known. For q they are the validation set's class frequencies, known exactly, and the
      validation and pool images of a class are drawn from the same distribution (the split only decimates
      classes), so only the priors differ: exactly the case of the paper.
    * The classifier's softmax is untrained at b = 1 (the rotation-pretrained model gets a random classifier
      layer), and later it is trained on a labeled set that the acquisition itself chose, whose class mix is far
      from the pool's and which the softmax over-fits (its posteriors are not calibrated).
    * q is the evidence p^ already uses, so the correction changes p^'s priors and nothing else.

    ``prepare`` (or ``prepare_from_features``) must run over the unlabeled pool first.
    """

    def __init__(self, val: Features, val_labels: torch.Tensor, num_classes: int, tau: Optional[float] = None,
                 chunk: int = 4096):
        super().__init__(val, val_labels, num_classes, chunk)
        counts = torch.bincount(self.val_labels, minlength=num_classes).double()
        self.train_priors = counts / counts.sum()                                 # [D]
        self.tau = fit_temperature(self.val_z, self.val_labels, num_classes, chunk=chunk)[0] if tau is None else tau
        self.priors: Optional[torch.Tensor] = None                                # [D], set by prepare

    def posterior(self, z: Sequence[torch.Tensor]) -> torch.Tensor:
        """The soft p^ q(d|x) under the validation priors: ``[B, D]``."""
        return parzen_posterior(class_log_kernel_sums(self.pool_z(z), self.val_z, self.val_labels,
                                                      self.num_classes, self.tau, self.chunk))

    def prepare_from_features(self, z: Sequence[torch.Tensor]) -> torch.Tensor:
        """EM over the pool's descriptors (per scale, ``[N, L_j]``): sets and returns the pool priors ``[D]``."""
        post = torch.cat([self.posterior([t[s:s + self.chunk].to(self.val_z.device) for t in z])
                          for s in range(0, len(z[0]), self.chunk)])
        self.priors = em_priors(post, self.train_priors)[0]
        return self.priors

    def prepare(self, model, source, idx: np.ndarray, taps: Sequence[str], device, batch_size: int = 1000,
                desc: Optional[str] = None) -> torch.Tensor:
        """One forward pass over ``source[idx]`` (descriptors only), then EM: the pool priors ``[D]``."""
        feats, _, _ = extract(model, source, idx, taps, device, batch_size, fisher=False, desc=desc)
        return self.prepare_from_features(feats.z)

    def corrected(self, z: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.priors is None:
            raise RuntimeError("PriorCorrected: call prepare() over the unlabeled pool before extracting with it")
        return prior_shift(self.posterior(z), self.train_priors, self.priors.to(self.train_priors.device))

    def __call__(self, model, x, logits, acts, z):
        return self.corrected(z).argmax(1).to(logits.device), None


class AgreementFilter(_ValidationMatch):
    """``phat-agree``: a rare p^ label is trusted only when the classifier agrees.

    Co-training's idea (A. Blum and T. Mitchell, "Combining labeled and unlabeled data with co-training",
    COLT 1998): two views of an image that err independently (here the nearest validation image under R_z and
    the classifier's argmax y^) agree by chance rarely, so agreement raises precision. It is applied to rare
    p^ labels only, because that is where p^'s errors are (common images called rare; the reverse is rare
    since few images are rare), and a common p^ label is kept as it is.

    A rejected rare p^ becomes the most similar *common* class under R_z, not y^: y^ comes from a random
    classifier layer at b = 1, later from a classifier trained on a rare-heavy labeled set, and it may itself
    be another rare class; the common class nearest in R_z uses the same evidence as p^ with the rare classes
    taken out. The rare classes are given (as SIMILAR assumes them known: its query set holds their examples);
    with none (a balanced split, or a spec that draws its rare classes per split) it is p^ itself.
    """

    def __init__(self, val: Features, val_labels: torch.Tensor, num_classes: int, rare: Sequence[int],
                 chunk: int = 4096):
        super().__init__(val, val_labels, num_classes, chunk)
        self.rare = torch.zeros(num_classes, dtype=torch.bool)
        self.rare[list(rare)] = True

    def __call__(self, model, x, logits, acts, z):
        best = class_max_similarity(self.pool_z(z), self.val_z, self.val_labels, self.num_classes, self.chunk)
        return agreement_labels(best, logits.argmax(1).to(best.device), self.rare).to(logits.device), None


class ExpectedFisher(PriorCorrected):
    """``efs`` / ``efs-em``: the Fisher score averaged over the label distribution instead of one hard label.

    g(x) = sum_d q(d|x) g(x, d) = E_{d ~ q(.|x)}[g(x, d)] with g(x, d) the Fisher score under label d. With a hard
    p^ a common image that p^ calls rare gets the Fisher score of the wrong class at full weight; with q its score
    is the mix of its plausible classes. g is minus the gradient of E_{d ~ q}[log p(d|x)], the auxiliary function
    of EM with the unknown label as the missing data and q its posterior (A. P. Dempster, N. M. Laird and
    D. B. Rubin, "Maximum likelihood from incomplete data via the EM algorithm", JRSS B 39(1), 1977): the score
    of the observation when its label is not observed, which is what the Fisher kernel of T. Jaakkola and
    D. Haussler ("Exploiting generative models in discriminative classifiers", NIPS 1998) compares. By linearity
    it is the gradient of the cross-entropy against the soft target q: one backward pass
    (``soft_label_fisher_scores``). q is the soft p^ (``efs``) or its EM prior-corrected version (``efs-em``,
    which needs ``prepare``). It cannot be the classifier's own softmax: under it the expected score is exactly
    zero (Fisher's identity: the score of sum_d p(d|x) = 1). The returned labels (argmax q) serve only the
    pseudo-label statistics.
    """

    def __init__(self, val: Features, val_labels: torch.Tensor, num_classes: int, prior_corrected: bool = False,
                 tau: Optional[float] = None, chunk: int = 4096):
        super().__init__(val, val_labels, num_classes, tau, chunk)
        self.prior_corrected = prior_corrected

    def prepare(self, *args, **kwargs):
        return super().prepare(*args, **kwargs) if self.prior_corrected else None

    def __call__(self, model, x, logits, acts, z):
        q = self.corrected(z) if self.prior_corrected else self.posterior(z)     # [B, D]
        return q.argmax(1).to(logits.device), soft_label_fisher_scores(logits, acts, q)


def build(name: str, val: Features, val_labels: torch.Tensor, num_classes: int, rare: Sequence[int] = (),
          standardization: str = "unit"):
    """The estimator for one of ``ESTIMATORS``; ``val`` validation features standardized by ``standardization``
    (``fkal.kernels.STANDARDIZATIONS``), which the estimator applies to the pool's descriptors too."""
    if name == "phat-em":
        estimator = PriorCorrected(val, val_labels, num_classes)
    elif name == "phat-agree":
        estimator = AgreementFilter(val, val_labels, num_classes, rare)
    elif name in ("efs", "efs-em"):
        estimator = ExpectedFisher(val, val_labels, num_classes, prior_corrected=name == "efs-em")
    else:
        raise ValueError(f"unknown estimator {name!r}: choose one of {', '.join(ESTIMATORS)}")
    estimator.standardization = standardization
    return estimator
