"""Shared core of the toolkit: everything that is the same for every dataset.

Where things live:
  datasets.py      dataset registry (protocol numbers), loading, pool/validation split, class imbalance
  folder.py        ImageNet image-folder sources (torchvision or DALI)
  models.py        task models returning ``(logits, taps)`` and their MC-dropout variants (LeNet here)
  resnet.py        ResNet-10/18 with taps, built from torchvision's classes
  training.py      SGD training with step schedule, evaluation, rotation pretraining
  descriptors.py   pooled descriptors z and Fisher scores g (one forward + one backward per batch)
  kernels.py       per-scale standardization, R_z (eq. 6), R_zg (eq. 12), chunked top-K
  pseudo_labels.py estimators S: y, yhat, phat, phat-g, trC, mi, mi-diag
  selection.py     k-center greedy and the merge of per-center rankings (Algorithm 1)
  acquisitions.py  one ``query(ctx)`` contract for every acquisition function; random and the Fisher kernel
  uncertainty.py   MC-dropout uncertainty baselines (varR, entropy, BALD, std) and ensembles
  coreset.py       the core-set baseline
  config.py        configuration names and the default cfg list
  loop.py          initial models and the active-learning iterations, results records, resume
  cli.py           the command line shared by run.py and the dataset stage scripts
  stages.py        the gen_descr stage on its own (descriptors written as .npy)
  report.py        results tables, label saving (run_plot.py); plots.py its figures
  diagnostics.py   confusion matrices and t-SNE (visualize_tsne.py)
  io.py            atomic writes and the results file
"""
