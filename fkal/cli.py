"""The command line shared by ``run.py`` and the dataset stage scripts (``mnist/unsup.py`` and the others)."""
from __future__ import annotations

import argparse
import errno
import os
import sys
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

import torch

from . import config_files, protocols
from .acquisitions.registry import ACQUISITIONS, argument_groups
from .arguments import OneLineErrors, integer, number
from .config import Config, parse_config
from .data import DATASETS, check_request, get_spec, load_raw
from .device import add_device_arguments, configure_cuda, device_from_args, select_device
from . import distributed as D
from .errors import SharedUserError, UserError
from .loop import run_config, run_full_train, run_initial
from .run_state import Settings

# The paper's Figure 4 set (MNIST, b): random, R_z, R_zg with S = y^ / p^ / y and the baselines, where available.
DEFAULT_CONFIGS = ("random", "pcc-L20", "pfk-y-L20", "pfk-yhat-L20", "pfk-phat-L20", "pfk-phat-L80", "pfk-y-L80",
                   "varR-K128", "varR-E4-K32", "coreset", "vaal", "tavaal", "lloss")


def default_configs(spec=None) -> list[Config]:
    """The default cfg list of a dataset (its ``configs``, else the MNIST Figure 4 set), keeping the entries whose
    acquisition is available."""
    out = []
    for name in (spec.configs if spec is not None and spec.configs else DEFAULT_CONFIGS):
        acq = max((a for a in ACQUISITIONS if name == a or name.startswith(a + "-")), key=len, default=None)
        if acq is not None:
            out.append(parse_config(name, ACQUISITIONS))
    return out


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None ones (their help text says what None means)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser(dataset: Optional[str] = None, stage: Optional[str] = None) -> argparse.ArgumentParser:
    what = {None: "Active learning on biased data (Gudovskiy et al., CVPR 2020) and its baselines.",
            "unsup": "Stage 1: the biased split and the initial models (random weights and rotation-pretrained).",
            "gen_descr": "Stage 2: descriptors z and Fisher scores g of the validation set and the unlabeled pool "
                         "for one configuration's model, written as .npy files.",
            "main_descr": "Stage 3: matching, selection and retraining, B iterations of each configuration."}[stage]
    p = OneLineErrors(description=what, formatter_class=HelpFormatter,
                      epilog="--config FILE runs the jobs of an experiment file (configs/*.yaml), each with the "
                             "file's options and then the flags given here, which win; see configs/README.md")
    if dataset is None:
        p.add_argument("--dataset", default="mnist", help=f"one of {', '.join(sorted(DATASETS))}")
    p.add_argument("--data-root", default=None,
                   help="folder that holds the dataset: MNIST/raw/ (MNIST), SVHN/*.mat (SVHN), "
                        "cifar-10-batches-py/ (CIFAR-10), cifar-100-python/ (CIFAR-100), "
                        "caltech101/101_ObjectCategories/<class>/ (Caltech-101), ImageNet/{train,val}/<wnid>/ "
                        "(ImageNet); default: --out. MNIST, SVHN, CIFAR-10 and CIFAR-100 are downloaded there when "
                        "missing and online")
    p.add_argument("--out", default="local_data", help="results go to {out}/{DATASET}/run{r}/")
    p.add_argument("--run-start", type=integer(0), default=0, help="first run index")
    p.add_argument("--run-stop", type=integer(1), default=None,
                   help="one past the last run index (default: the dataset's runs)")
    p.add_argument("--seed", type=integer(0), default=None, help="seed of every run (default: the run index)")
    p.add_argument("--imbalance-ratios", type=number(1), nargs="+", default=[1.0, 100.0],
                   help="class imbalance ratios IR (>= 1)")
    p.add_argument("--noise-ratio", type=number(0, 1, below=True), default=0.0,
                   help="share of pool labels replaced by a wrong class, in [0, 1)")
    add_device_arguments(p)
    p.add_argument("--epochs", type=integer(1), default=None, help="training epochs per iteration (default: protocol)")
    p.add_argument("--unsup-epochs", type=integer(1), default=None,
                   help="rotation pretraining epochs of the initial models (default: the protocol's where they are "
                        "made; a run whose initial models exist takes the schedule they were pretrained with, so "
                        "only --initial needs it; given and different from theirs, the run stops with the difference)")
    p.add_argument("--iterations", type=integer(1), default=None, help="AL iterations B (default: protocol)")
    p.add_argument("--pool-size", type=integer(1), default=None, help="images added per iteration P (default: protocol)")
    p.add_argument("--batch-size", type=integer(1), default=None,
                   help="training batch size (default: protocol); under torchrun it is the GLOBAL batch, each "
                        "batch dealt out over the processes, so N processes train on the protocol's batches")
    p.add_argument("--train-size", type=integer(0), default=None,
                   help="size of the pool D before the imbalance is applied; 0: every train image not in D_v "
                        "(default: protocol, 50000 for MNIST)")
    p.add_argument("--val-size", type=integer(0), default=None,
                   help="size of the validation set D_v (default: protocol)")
    p.add_argument("--eval-batch", type=integer(1), default=1000, help="batch size of inference and descriptor passes")
    p.add_argument("--epoch-selection", choices=("final", "val"), default="final",
                   help="the model an iteration keeps, reports and warm-starts the next one from: final (the last "
                        "epoch's) or val (the epoch with the best accuracy on the labeled validation set D_v); "
                        "the test set chooses nothing. Records keep both the kept model's and the final epoch's "
                        "test accuracy")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    if stage in (None, "main_descr", "gen_descr"):
        p.add_argument("--unsupervised", type=int, choices=(0, 1), default=1,
                       help="initial model: 1 rotation-pretrained, 0 random weights")
        p.add_argument("--only", nargs="+", metavar="NAME", default=None,
                       help="run only these configurations (names as --list prints)")
        p.add_argument("--fresh", nargs="+", metavar="NAME", default=(),
                       help="start these configurations afresh where their folder holds results of other settings "
                            "(the old folder is kept beside it as {NAME}.replaced-{id}; its records stay in "
                            "results.jsonl under their own settings)")
    if stage is None:
        p.add_argument("--initial", action="store_true", help="make the splits and initial models, then stop")
        p.add_argument("--full-train", action="store_true",
                       help="train on the whole biased pool per run and IR (the 'all train' line), then stop")
        p.add_argument("--list", action="store_true", help="print the configuration names of the cfg list and stop")
    if stage == "gen_descr":
        p.add_argument("--iteration", type=integer(0), default=0,
                   help="model state: 0 the initial model, b after iteration b")
    protocols.add_arguments(p)
    for add in argument_groups():
        add(p)
    p.add_argument("--members", type=integer(1), default=None,
                   help="initial models per run and IR (ensemble members; default: the largest E of the configurations)")
    return p


def settings_from(args: argparse.Namespace, spec, device: Optional[torch.device] = None) -> Settings:
    """Run-wide settings from the command line; ``device``: the GPU torchrun assigned this process, if any."""
    train = spec.train if args.epochs is None else spec.train.with_epochs(args.epochs)
    if args.batch_size is not None:
        train = replace(train, batch_size=args.batch_size)
    unsup = spec.unsup if args.unsup_epochs is None else spec.unsup.with_epochs(args.unsup_epochs)
    return protocols.apply_to_settings(Settings(out=Path(args.out), spec=spec, train=train, unsup=unsup,
                    query_size=spec.query_size if args.pool_size is None else args.pool_size,
                    iterations=spec.iterations if args.iterations is None else args.iterations,
                    device=device or device_from_args(args), seed=args.seed, noise_ratio=args.noise_ratio,
                    train_size=args.train_size, val_size=args.val_size, eval_batch=args.eval_batch,
                    progress=not args.no_progress and D.is_main(),
                    options=tuple(sorted((k, v) for k, v in vars(args).items() if k != "config_file")),
                    epoch_selection=args.epoch_selection, fresh=tuple(getattr(args, "fresh", ()) or ()),
                    unsup_given=args.unsup_epochs is not None,
                    config_file=getattr(args, "config_file", None)), args)


def pick_device(gpu: Optional[int]) -> torch.device:
    """The device of ``--gpu`` for the helper scripts (``fkal.device.select_device``, determinism on)."""
    return select_device(gpu)


def selected_configs(args: argparse.Namespace, spec) -> list[Config]:
    if getattr(args, "only", None):
        return [parse_config(n, ACQUISITIONS) for n in args.only]
    return default_configs(spec)


def stage_main(script: str) -> int:
    """Entry point of a dataset stage script ``{dataset}/{stage}.py``: both names come from its path."""
    path = Path(script)
    return main(dataset=path.parent.name, stage=path.stem)


def main(argv: Optional[Sequence[str]] = None, dataset: Optional[str] = None, stage: Optional[str] = None,
         provenance: Optional[dict] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        path, rest = config_files.split_config(argv)
        experiment = config_files.load(path) if path is not None else None
        jobs = config_files.job_argvs(experiment, rest) if experiment is not None else []
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    if experiment is not None:              # run.py --config FILE: each job in turn, the command line's flags last
        for k, job in enumerate(jobs, start=1):
            D.print_once(f"{experiment.name} job {k}/{len(jobs)}: run.py {config_files.describe(job)}", sys.stdout)
            code = main(job, dataset, stage, experiment.provenance())
            if code:
                return code
        return 0
    try:
        args = protocols.parse(build_parser(dataset, stage), argv, dataset)
    except SystemExit as e:                 # --help, or a usage error already printed as one line
        return int(e.code or 0)
    args.config_file = provenance
    try:
        if D.launched() and torch.cuda.is_available():      # before the first CUDA operation (fkal.device)
            configure_cuda(deterministic=not getattr(args, "nondeterministic", False))
        return _main(args, dataset or args.dataset, stage, D.init())
    except SharedUserError as e:            # every process raised it: rank 0 says it
        D.print_once(f"error: {e}")
        return e.exit_code
    except UserError as e:
        print(f"error: {'' if D.is_main() else f'(rank {D.rank()}) '}{e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EPERM):
            raise
        print(f"error: {os_error_line(e)}", file=sys.stderr)
        return UserError.exit_code
    except KeyboardInterrupt:
        D.print_once("interrupted: finished iterations and models are saved; run the same command again to resume")
        return 130
    finally:
        D.shutdown()


def _main(args: argparse.Namespace, dataset: str, stage: Optional[str], gpu: Optional[torch.device]) -> int:
    with D.agreed():                        # the checks that may fail on bad input fail on every process together
        s, raw, configs, runs, members = _prepare(args, dataset, stage, gpu)
    if s is None:                           # --list
        return 0
    if stage == "gen_descr":
        from .stages import gen_descr
        return gen_descr(s, raw, configs, runs, args.imbalance_ratios, args.unsupervised, args.iteration)
    for run in runs:
        for ir in args.imbalance_ratios:
            if stage == "unsup" or getattr(args, "initial", False):
                run_initial(s, raw, run, ir, members)
            elif getattr(args, "full_train", False):
                rec = run_full_train(s, raw, run, ir, args.unsupervised)
                D.print_once(f"run{run} IR={ir:g} full-train: test accuracy {rec['test_accuracy']:.2f}%", sys.stdout)
            else:
                for cfg in configs:
                    recs = run_config(s, raw, cfg, run, ir, args.unsupervised)
                    if recs:
                        D.print_once(f"run{run} IR={ir:g} {cfg.name}: " +
                                     " ".join(f"{r['labeled']}:{r['test_accuracy']:.1f}" for r in recs), sys.stdout)
    return 0


def _prepare(args: argparse.Namespace, dataset: str, stage: Optional[str], gpu: Optional[torch.device]):
    """``(settings, data, configurations, runs, members)`` from the command line, or Nones after ``--list``."""
    spec = protocols.apply_to_spec(get_spec(dataset), args)
    if getattr(args, "list", False):
        if D.is_main():
            for cfg in default_configs(spec):
                print(cfg.name)
        return None, None, None, None, None
    if gpu is not None and args.gpu is not None:
        raise UserError(f"--gpu {args.gpu}: under torchrun each process takes the GPU of its LOCAL_RANK; drop --gpu "
                        "(choose the GPUs with CUDA_VISIBLE_DEVICES)")
    for ir in args.imbalance_ratios:
        check_request(spec, ir, args.noise_ratio)
    configs = [] if stage == "unsup" or getattr(args, "initial", False) else selected_configs(args, spec)
    unknown = sorted(set(getattr(args, "fresh", ()) or ()) - {c.name for c in configs})
    if unknown:
        raise UserError(f"--fresh {' '.join(unknown)}: not among the configurations this command runs "
                        f"({', '.join(c.name for c in configs) or 'none'})")
    if args.run_stop is not None and args.run_stop <= args.run_start:
        raise UserError(f"--run-stop {args.run_stop} must be above --run-start {args.run_start}")
    check_writable(Path(args.out))
    s = settings_from(args, spec, gpu)
    protocols.check(s, spec, configs, spec.val_size if args.val_size is None else args.val_size)
    raw = protocols.prepare_data(load_raw(spec, args.data_root or args.out, D.is_main(), s.device),  # only rank 0
                                 spec, args, Path(args.out), write=D.is_main())                    # downloads, writes
    _warn_if_validation_is_test(raw, spec, configs, s)
    runs = range(args.run_start, spec.runs if args.run_stop is None else args.run_stop)
    members = args.members or max([c.E for c in configs] + [1])
    return s, raw, configs, runs, members


def _warn_if_validation_is_test(raw, spec, configs, s) -> None:
    """One warning where D_v is drawn from the test set (ImageNet's val folder serves as both, as in the paper) and
    something reads its labels: ``--epoch-selection val`` or an acquisition that matches D_v."""
    from .acquisitions.registry import find

    readers = [c.name for c in configs if "val" in getattr(find(c.acquisition), "needs", ())]
    if raw.val is None or raw.val is not raw.test or not (readers or s.epoch_selection == "val"):
        return
    what = ", ".join(readers + (["--epoch-selection val"] if s.epoch_selection == "val" else []))
    if D.is_main():
        warnings.warn(f"{spec.name}: D_v is drawn from the set that is also the test set (the paper's protocol for "
                      f"{spec.name}); {what} read{'s' if len(readers) + (s.epoch_selection == 'val') == 1 else ''} "
                      "its labels, so the test accuracy of these runs is not held out: report it as such")


def check_writable(folder: Path) -> None:
    """A ``UserError`` naming ``folder`` when files cannot be created in it. Creates nothing: a missing folder is
    judged by its nearest existing parent."""
    fix = "choose a folder you can write to (--out)"
    try:
        if folder.is_dir():
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
                pass
            return
        if folder.exists():
            raise UserError(f"--out {folder} is a file, not a folder: {fix}")
        parent = next(p for p in folder.absolute().parents if p.exists())
        if not (parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)):
            raise UserError(f"cannot create --out {folder}: {parent} is not writable; {fix}")
    except OSError as e:
        raise UserError(f"cannot write into --out {folder}: {e.strerror or e}; {fix}") from None


def os_error_line(e: OSError) -> str:
    """One line for a failed write: the file, the reason and the way out; files already written stay as they
    were (every write goes to a temporary name first)."""
    where = e.filename or "a file"
    fix = {errno.ENOSPC: "free some disk space", errno.EDQUOT: "free some disk space (quota)"}.get(
        e.errno, "make it writable or choose another --out")
    return (f"cannot write {where}: {e.strerror or os.strerror(e.errno)}; {fix}, then run the same command again "
            "(finished files are kept)")
