"""What a model gets wrong at a chosen iteration: confusion matrices and a t-SNE of test features
(the paper's Figure 6), for ``visualize_tsne.py``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from .data import TensorSource


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """``[C, C]`` counts: row = true class, column = predicted class."""
    return np.bincount(labels * num_classes + predictions, minlength=num_classes ** 2).reshape(num_classes, num_classes)


@torch.no_grad()
def features_and_predictions(model: torch.nn.Module, source: TensorSource, idx: np.ndarray, tap: str,
                             device: torch.device, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Pooled activations of ``tap`` ``[N, L]`` and predicted classes ``[N]``."""
    model.eval()
    feats, preds = [], []
    for _, x in source.batches(idx, batch_size):
        logits, taps = model(x.to(device))
        t = taps[tap]
        feats.append((t.mean((2, 3)) if t.dim() == 4 else t).float().cpu())
        preds.append(logits.argmax(1).cpu())
    return torch.cat(feats).numpy(), torch.cat(preds).numpy()


def tsne(features: np.ndarray, seed: int, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE embedding ``[N, 2]`` (scikit-learn), seeded."""
    from sklearn.manifold import TSNE
    return TSNE(n_components=2, perplexity=min(perplexity, (len(features) - 1) / 3), init="pca",
                random_state=seed).fit_transform(features)


@dataclass
class Panel:
    title: str
    confusion: np.ndarray     # [C, C]
    embedding: np.ndarray     # [n, 2]
    labels: np.ndarray        # [n] true classes of the embedded points
    wrong: np.ndarray         # [n] bool, misclassified


def figure(panels: Sequence[Panel], num_classes: int, suptitle: Optional[str] = None):
    """Confusion matrices (top row) and t-SNE scatter plots (bottom row), one column per configuration.
    Dots are correct test images, larger circled markers misclassified ones."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(panels)
    fig, axes = plt.subplots(2, n, figsize=(4.2 * n, 8.4), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for col, p in enumerate(panels):
        ax = axes[0, col]
        row_share = p.confusion / np.maximum(p.confusion.sum(1, keepdims=True), 1)
        ax.imshow(row_share, cmap="Blues", vmin=0, vmax=1)
        for i in range(num_classes):
            for j in range(num_classes):
                if p.confusion[i, j]:
                    ax.text(j, i, str(p.confusion[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if row_share[i, j] > 0.5 else "black")
        ax.set(title=p.title, xlabel="predicted", ylabel="true", xticks=range(num_classes), yticks=range(num_classes))
        ax = axes[1, col]
        ok = ~p.wrong
        ax.scatter(*p.embedding[ok].T, c=cmap(p.labels[ok] % 10), s=3, linewidths=0)
        ax.scatter(*p.embedding[p.wrong].T, c=cmap(p.labels[p.wrong] % 10), s=28, edgecolors="black",
                   linewidths=0.6)
        ax.set(xticks=[], yticks=[], title=f"t-SNE: {p.wrong.sum()} of {len(p.wrong)} misclassified")
    handles = [plt.Line2D([], [], marker="o", ls="", color=cmap(c), label=str(c)) for c in range(min(num_classes, 10))]
    fig.legend(handles=handles, loc="lower center", ncol=10, title="true class")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    return fig
