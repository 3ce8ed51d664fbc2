"""The device of a run, chosen once at the start, and the settings that make a CUDA run repeat bit for bit.

``select_device(gpu, allow_cpu_fallback, deterministic)`` is what the command line calls, once, before anything
touches CUDA: without ``--gpu`` it makes no CUDA call at all (a CPU run opens no CUDA context); with ``--gpu N`` it
checks that device N exists (else one ``UserError``, or the CPU with a warning where the fallback is asked for),
sets the determinism settings below and makes N the current CUDA device (``torch.cuda.set_device``), so that
everything that uses "the current device" (DALI's ``device_id``, pinned-memory threads, ``torch.cuda.current_stream``)
works on N and not on GPU 0.

Determinism on CUDA (on by default; ``--nondeterministic`` trades it for speed), following PyTorch's
"Reproducibility" notes and the documentation of ``torch.use_deterministic_algorithms``:

- ``CUBLAS_WORKSPACE_CONFIG=:4096:8``: cuBLAS (CUDA >= 10.2) is only deterministic with a fixed workspace, and
  with deterministic algorithms on, PyTorch raises on a cuBLAS call unless the variable is ``:4096:8`` or
  ``:16:8``. PyTorch reads it when it creates a cuBLAS handle, so it is set before the first CUDA operation.
- ``torch.use_deterministic_algorithms(True)``: convolutions, transposed convolutions (VAAL's VAE), index_add,
  scatter_add and the other listed operations switch to deterministic kernels; an operation that has none raises a
  ``RuntimeError`` instead of silently differing (``tests/test_device.py`` checks that the models' backward passes
  use none of the operations the documentation lists as raising).
- ``torch.backends.cudnn.deterministic = True`` and ``torch.backends.cudnn.benchmark = False``: cuDNN picks the same
  (deterministic) convolution algorithm on every run instead of timing candidates (benchmarking may pick another
  algorithm each run, and the fastest are often nondeterministic).

``--nondeterministic`` turns deterministic algorithms off and cuDNN benchmarking on. What is in effect is read back
from torch by ``cuda_settings(device)`` and recorded in every record (the ``cuda`` setting, None on the CPU), so
records made with and without determinism are never averaged together and a resume does not mix them.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

import torch

from .arguments import integer
from .errors import UserError

CUBLAS_VARIABLE = "CUBLAS_WORKSPACE_CONFIG"
CUBLAS_DETERMINISTIC = (":4096:8", ":16:8")     # the two values PyTorch's determinism check accepts


def add_device_arguments(p: argparse.ArgumentParser) -> None:
    """``--gpu``, ``--allow-cpu-fallback`` and ``--nondeterministic``."""
    p.add_argument("--gpu", type=integer(0), default=None,
                   help="CUDA device index (default: the CPU); a device that does not exist here is an error")
    p.add_argument("--allow-cpu-fallback", action="store_true",
                   help="with --gpu N: run on the CPU (with a warning) where CUDA or device N is missing, instead "
                        "of stopping")
    p.add_argument("--nondeterministic", action="store_true",
                   help="CUDA runs: let cuDNN choose the fastest convolution algorithms and allow nondeterministic "
                        "kernels. Faster, but two runs (and a resumed run against an uninterrupted one) no longer "
                        "agree bit for bit; recorded in every record. No effect on the CPU")


def device_from_args(args: argparse.Namespace) -> torch.device:
    """The run's device from the parsed command line (``select_device``)."""
    return select_device(args.gpu, allow_cpu_fallback=getattr(args, "allow_cpu_fallback", False),
                         deterministic=not getattr(args, "nondeterministic", False))


def select_device(gpu: Optional[int], allow_cpu_fallback: bool = False, deterministic: bool = True) -> torch.device:
    """The device of the run; call once, before any CUDA operation.

    ``gpu`` None: the CPU, with no CUDA call at all. ``gpu`` N: ``cuda:N`` after ``configure_cuda`` and
    ``torch.cuda.set_device(N)``. A negative N, no CUDA, or no device N is a ``UserError`` (one ``error:`` line,
    exit 2), unless ``allow_cpu_fallback``: then a warning line on stderr and the CPU.
    """
    if gpu is None:
        return torch.device("cpu")
    if gpu < 0:
        raise UserError(f"--gpu {gpu}: a CUDA device index is 0 or more")
    problem = None
    if not torch.cuda.is_available():
        problem = (f"--gpu {gpu}: no CUDA device is visible here (torch {torch.__version__}, built for CUDA "
                   f"{torch.version.cuda or 'none'})")
    else:
        count = torch.cuda.device_count()
        if gpu >= count:
            problem = f"--gpu {gpu}: this machine has {count} CUDA device{'s' if count != 1 else ''} (0-{count - 1})"
    if problem is not None:
        if not allow_cpu_fallback:
            raise UserError(f"{problem}; choose another --gpu, leave it out to run on the CPU, or add "
                            "--allow-cpu-fallback")
        print(f"warning: {problem}: running on the CPU (--allow-cpu-fallback)", file=sys.stderr, flush=True)
        return torch.device("cpu")
    configure_cuda(deterministic)
    torch.cuda.set_device(gpu)          # the current device: DALI, pinned memory and streams follow it
    return torch.device("cuda", gpu)


def configure_cuda(deterministic: bool = True) -> None:
    """Set (or, with ``deterministic=False``, release) CUDA determinism for this process; see the module docstring.

    With determinism on, ``CUBLAS_WORKSPACE_CONFIG`` is set to ``:4096:8`` unless it already holds one of the two
    deterministic values. It must be in the environment before the first cuBLAS handle is made; once CUDA is
    initialized that is no longer certain, so an unsuitable value at that point is a ``RuntimeError``.
    """
    if deterministic:
        if os.environ.get(CUBLAS_VARIABLE) not in CUBLAS_DETERMINISTIC:
            if torch.cuda.is_initialized():
                raise RuntimeError(f"CUDA is already initialized, so setting {CUBLAS_VARIABLE} now may come too late "
                                   f"for cuBLAS: set {CUBLAS_VARIABLE}={CUBLAS_DETERMINISTIC[0]} in the environment, "
                                   "or choose the device before any CUDA operation")
            os.environ[CUBLAS_VARIABLE] = CUBLAS_DETERMINISTIC[0]
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True


def cuda_settings(device: torch.device) -> Optional[dict]:
    """What shapes a CUDA run's numbers besides the code and the data, as torch reports it now: None on the CPU
    (nothing here changes CPU numbers); on CUDA the determinism switches, the cuBLAS workspace setting and the
    TF32 switches (TF32 convolutions and matrix products round differently from float32 ones). Part of every
    record's settings (``fkal.settings``, setting ``cuda``)."""
    if device.type != "cuda":
        return None
    return {"deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "cublas_workspace_config": os.environ.get(CUBLAS_VARIABLE),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32)}
