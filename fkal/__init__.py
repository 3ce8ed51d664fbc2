"""Shared core of the toolkit: everything that is the same for every dataset.

Where things live:
  datasets.py      dataset registry (protocol numbers), loading, pool/validation split, class imbalance
  models.py        task models returning ``(logits, taps)`` and their MC-dropout variants
  training.py      SGD training with step schedule, evaluation, rotation pretraining
  descriptors.py   pooled descriptors z and Fisher scores g (one forward + one backward per batch)
  kernels.py       per-scale standardization, R_z (eq. 6), R_zg (eq. 12), chunked top-K
  pseudo_labels.py estimators S: y, yhat, phat, phat-g, trC, mi, mi-diag
  selection.py     k-center greedy and the merge of per-center rankings (Algorithm 1)
  acquisitions.py  one ``query(ctx)`` contract for every acquisition function
  config.py        configuration names and the default cfg list
  loop.py          initial models and the active-learning iterations, results records, resume
  cli.py           the command line shared by run.py and the dataset stage scripts
"""
