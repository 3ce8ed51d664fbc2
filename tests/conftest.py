"""Shared fixtures: tiny MNIST-format data written by the tests, and the real MNIST when offered.

The real MNIST is found through the environment variable ``FKAL_DATA_ROOT`` (the folder that holds
``MNIST/raw``); `.ci/run` sets it to ``../shared/datasets``. Nothing is ever downloaded in tests.
"""
from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fkal.data.synthetic import write_mnist

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)
# cuBLAS reads its workspace setting when PyTorch makes its first handle: set it before any test touches CUDA, so
# that the CUDA tests can run with determinism on (fkal.device.configure_cuda) in any order.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

# The devices at hand: the CPU, and CUDA device 0 where present (the CUDA variants are skipped elsewhere).
DEVICES = [pytest.param(torch.device("cpu"), id="cpu"),
           pytest.param(torch.device("cuda", 0), id="cuda",
                        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here"))]


@pytest.fixture(params=DEVICES)
def devices(request):
    """Each device at hand in turn (a test that takes it runs once per device). On CUDA the test runs as a run
    does, determinism on (``fkal.device.configure_cuda``) and the device current, and with TF32 off, so that CUDA
    numbers can be held against CPU ones at float32 tolerances; the switches are restored after."""
    device = request.param
    if device.type != "cuda":
        yield device
        return
    from fkal.device import configure_cuda
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision())
    configure_cuda(True)
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    torch.cuda.set_device(device)
    yield device
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
    torch.backends.cudnn.allow_tf32 = saved[4]
    torch.set_float32_matmul_precision(saved[5])


@pytest.fixture
def tiny_mnist(tmp_path) -> Path:
    """A data root holding a 600/200-image MNIST in the real on-disk format."""
    return write_mnist(tmp_path / "data")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """With ``FKAL_PYTEST_TMP`` set (tools/mutation_score.py sets it), each pytest session gets its own temp
    folder under it, removed when the session ends: mutmut's workers run their sessions side by side, and two
    sessions sharing one ``--basetemp`` empty each other's files (a mutant "killed" by a vanished file)."""
    root = os.environ.get("FKAL_PYTEST_TMP")
    if root and config.option.basetemp is None:
        Path(root).mkdir(parents=True, exist_ok=True)
        # a new folder per session, also for sessions run one after another in one process (mutmut runs its
        # first ones in-process): the same paths again would meet the process's warn-once memory
        config.option.basetemp = tempfile.mkdtemp(prefix=f"pid{os.getpid()}-", dir=root)
        config.add_cleanup(functools.partial(shutil.rmtree, config.option.basetemp, ignore_errors=True))


def pytest_collection_modifyitems(items):
    """Every test that reads the real MNIST is marked ``real_data`` (mutation testing leaves them out)."""
    for item in items:
        if "mnist_root" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_data)


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    root = os.environ.get("FKAL_DATA_ROOT")
    if not root or not (Path(root) / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.skip("real MNIST not offered: set FKAL_DATA_ROOT to the folder that holds MNIST/raw")
    return Path(root)


def make_query_context(root: Path, cfg, *, n_labeled: int = 20, budget: int = 12, models=None,
                       wrapped: bool = False, iteration: int = 2, options: dict | None = None, seed: int = 0,
                       device: torch.device = torch.device("cpu"), pretrained=None):
    """A ``QueryContext`` on the MNIST-format data at ``root``: a 300-image pool (IR 1) of which ``n_labeled``
    are labeled (drawn with ``seed``), a 100-image validation set, and ``cfg.E`` fresh LeNets seeded with
    ``seed`` unless ``models`` are given, on ``device``; ``wrapped`` applies the acquisition's task hooks as the
    loop does. ``cfg`` is a ``Config`` or a configuration name. ``pretrained`` (the loader of ``ctx.pretrained``)
    defaults to one more fresh LeNet."""
    from fkal.acquisitions.contract import QueryContext
    from fkal.acquisitions.registry import ACQUISITIONS, TASK_HOOKS
    from fkal.config import Config, parse_config
    from fkal.data import DATASETS, ALData, make_split
    from fkal.data.mnist import load_mnist
    from fkal.models import lenet

    spec = DATASETS["mnist"]
    cfg = cfg if isinstance(cfg, Config) else parse_config(cfg, ACQUISITIONS)
    raw = load_mnist(str(root), download=False)
    split = make_split(spec, raw, seed=0, imbalance_ratio=1, train_size=300, val_size=100)
    labeled = np.sort(np.random.default_rng(seed).choice(len(split.pool), n_labeled, replace=False))
    torch.manual_seed(seed)
    if models is None:
        models = [lenet() for _ in range(cfg.E)]
        if wrapped and cfg.acquisition in TASK_HOOKS:
            models = [TASK_HOOKS[cfg.acquisition].wrap(m, spec) for m in models]
    with torch.random.fork_rng():                # the default ctx.pretrained, leaving the global RNG as it was
        torch.manual_seed(seed + 1)
        pre = lenet().eval()
    return QueryContext(models=[m.to(device).eval() for m in models], data=ALData(spec, raw, split), labeled=labeled,
                        unlabeled=np.setdiff1d(np.arange(len(split.pool)), labeled), budget=budget,
                        generator=torch.Generator().manual_seed(seed), device=device, config=cfg,
                        iteration=iteration, batch_size=64, progress=False, options=dict(options or {}),
                        pretrained=pretrained or (lambda: pre.to(device)))


@pytest.fixture
def query_ctx(tiny_mnist):
    """``query_ctx(cfg, **knobs)``: a ``QueryContext`` on the tiny MNIST (see ``make_query_context``)."""
    return functools.partial(make_query_context, tiny_mnist)
