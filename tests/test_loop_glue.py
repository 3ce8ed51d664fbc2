"""The loop's glue against values recomputed from what a run saved (``split.npz``, each ``state_b*.pt``'s
``labeled_at`` and weights): what each query is offered, what each training step is given, what each record
counts. A one-line slip there (the true labels for the annotator's, the labeled set of the iteration before,
another generator) leaves every acquisition's own tests green; these catch it."""
from __future__ import annotations

import json

import numpy as np
import torch

from fkal.acquisitions import registry
from fkal.cli import main
from fkal.data import Split
from fkal.data.mnist import load_mnist
from fkal.metrics import class_scores
from fkal.models import lenet
from fkal.run_state import generator

P, B, SEED = 10, 3, 0


def test_queries_training_and_records_follow_the_saved_state(tiny_mnist, tmp_path, monkeypatch):
    import fkal.loop
    queries, trainings = [], []
    real_query, real_train = registry.ACQUISITIONS["random"], fkal.loop.train

    def spy_query(ctx):
        queries.append({"iteration": ctx.iteration, "labeled": np.array(ctx.labeled),
                        "unlabeled": np.array(ctx.unlabeled), "budget": ctx.budget,
                        "generator": ctx.generator.get_state().clone()})
        return real_query(ctx)

    def spy_train(model, source, idx, labels, *args, **kwargs):
        trainings.append({"idx": np.array(idx), "labels": np.array(labels)})
        return real_train(model, source, idx, labels, *args, **kwargs)
    monkeypatch.setitem(registry.ACQUISITIONS, "random", spy_query)
    monkeypatch.setattr(fkal.loop, "train", spy_train)
    out = tmp_path / "out"
    assert main(["--data-root", str(tiny_mnist), "--out", str(out), "--run-stop", "1", "--imbalance-ratios", "4",
                 "--train-size", "400", "--val-size", "100", "--unsup-epochs", "1", "--epochs", "2", "--iterations",
                 str(B), "--pool-size", str(P), "--no-progress", "--eval-batch", "128", "--noise-ratio", "0.4",
                 "--only", "random"]) == 0

    run = out / "MNIST" / "run0"
    raw = load_mnist(str(tiny_mnist), download=False)
    split = Split.load(run / "ir4" / "split.npz", raw)
    truth = raw.train.labels[split.pool]
    assert (split.pool_labels != truth).any()                     # the annotator's labels are not the truth
    states = [torch.load(run / "ir4" / "rotation" / "random" / f"state_b{b:02d}.pt") for b in range(1, B + 1)]
    records = sorted((json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()),
                     key=lambda r: r["iteration"])
    assert [q["iteration"] for q in queries] == [r["iteration"] for r in records] == list(range(1, B + 1))
    before = np.full(len(split.pool), -1)
    for b, (q, t, state, r) in enumerate(zip(queries, trainings, states, records), start=1):
        labeled_at = state["labeled_at"].numpy()
        # the query: offered what was unlabeled before iteration b, told what was labeled, P, b's own generator
        np.testing.assert_array_equal(q["labeled"], np.flatnonzero(before >= 0))
        np.testing.assert_array_equal(q["unlabeled"], np.flatnonzero(before < 0))
        assert q["budget"] == P and torch.equal(q["generator"], generator(SEED, "query", b).get_state())
        picks = np.flatnonzero(labeled_at == b)
        assert len(picks) == P and (before[picks] < 0).all() and (labeled_at[before >= 0] == before[before >= 0]).all()
        # training: every image labeled so far, with the annotator's labels (noisy), none other
        labeled = np.flatnonzero(labeled_at >= 0)
        np.testing.assert_array_equal(t["idx"], split.pool[labeled])
        np.testing.assert_array_equal(t["labels"], split.pool_labels[labeled])
        # the record's counts
        assert (r["labeled"], r["query_size"], r["pool_size"]) == (len(labeled), P, len(split.pool))
        assert r["selected_class_counts"] == np.bincount(truth[picks], minlength=10).tolist()   # true classes
        counts = np.bincount(split.pool_labels[labeled], minlength=10)
        assert (r["labeled_min_class_count"], r["labeled_max_class_count"]) == (counts.min(), counts.max())
        # the record's accuracies: the saved model on the test set
        model = lenet()
        model.load_state_dict(state["models"][0])
        with torch.no_grad():
            pred = model.eval()(raw.test.get(np.arange(len(raw.test))))[0].argmax(1).numpy()
        acc, _ = class_scores(pred, raw.test.labels, 10)
        assert r["test_accuracy"] == 100.0 * float((pred == raw.test.labels).mean())
        np.testing.assert_allclose(r["per_class_accuracy"], 100.0 * acc)
        assert r["balanced_accuracy"] == 100.0 * float(acc.mean())
        assert r["worst_class"] == int(np.argmin(acc))
        before = labeled_at
