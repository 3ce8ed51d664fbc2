"""fkal: deep active learning on biased data (Gudovskiy et al., CVPR 2020), its baselines and successors.

The library's face is one call, ``fkal.select(name, model, pool, budget, labeled=..., val=...)``, which returns a
``Selection`` (``fkal.api``); ``fkal.available()`` lists the acquisitions and ``fkal.register`` adds one.
``import fkal`` is light: PyTorch loads at the first use of these names.

The package, everything that is the same for every dataset:

Where things live:
  acquisitions/    which images to label next, one module per family behind one ``query(ctx)`` contract;
                   ``acquisitions/registry.py`` names every acquisition (``vaal/`` adds VAAL, TA-VAAL, learning loss)
  data/            the protocol registry (``data/protocol.py``), one module per source (MNIST, SVHN, CIFAR-10/100,
                   Caltech-101, image folders with DALI), the biased split with its imbalance rules and ``ALData``
  models/          task models returning ``(logits, taps)`` and their MC-dropout variants (LeNet, ResNet-10/18)
  reporting/       results records, curves and label saving, tables, figures (``run_plot.py``)
  kernels.py       per-scale standardization, R_z (eq. 6), R_zg (eq. 12), chunked top-K
  descriptors.py   pooled descriptors z and Fisher scores g (one forward + one backward per batch)
  pseudo_labels.py estimators S: y, yhat, phat, phat-g, trC, mi, mi-diag (and, from
                   pseudo_label_estimators.py, phat-em, phat-agree, efs, efs-em: p^ corrected for class imbalance)
  selection.py     k-center greedy and the merge of per-center rankings (Algorithm 1)
  training.py      SGD training with step schedule, evaluation, rotation pretraining
  config.py        configuration names
  protocols.py     benchmarks by name (--protocol fk | tavaal | tavaal-paper): command-line defaults per dataset,
                   the initial random labeled set and the per-cycle unlabeled subset
  state/           a run's on-disk state by job: paths (RunPaths, Cell), run (Settings, seeds), checkpoints,
                   resume (the settings checks on resume); run_state.py gathers them for older imports
  record.py        the results record, one schema the loop writes and reporting reads
  loop.py          initial models and the active-learning iterations, their results records, resume
  api.py           fkal.select and Selection: the library call on any model and data
  launch.py        the console scripts fkal-run, fkal-plot, fkal-label (run.py, run_plot.py, label_next.py)
  config_files.py  experiment files (run.py --config FILE, run_plot.py --config FILE)
  labeling/        label_next.py's labeling rounds on a user's own images
  cli.py           the command line shared by run.py and the dataset stage scripts
  device.py        the run's device, chosen once (--gpu), and CUDA determinism (set and recorded)
  stages.py        the gen_descr stage on its own (descriptors written as .npy)
  diagnostics.py   confusion matrices and t-SNE (visualize_tsne.py)
  io.py            atomic writes and the results file
"""

__all__ = ["AcquisitionSpec", "Selection", "available", "register", "select"]
__version__ = "1.0.0"


def __getattr__(name: str):
    """``fkal.select``, ``fkal.Selection``, ``fkal.available``, ``fkal.register``, ``fkal.AcquisitionSpec``, loaded
    on first use (so that the scripts' Ctrl-C handling covers PyTorch's import)."""
    if name in ("select", "Selection", "available"):
        from . import api
        return getattr(api, name)
    if name == "register":
        from .acquisitions.registry import register
        return register
    if name == "AcquisitionSpec":
        from .acquisitions.contract import AcquisitionSpec
        return AcquisitionSpec
    raise AttributeError(f"module 'fkal' has no attribute {name!r}")
