"""The device of a run (``fkal.device``): chosen once, a missing GPU is one error line, a CPU run makes no CUDA
call, determinism is set as documented and recorded in every record, and the models use no operation that has no
deterministic CUDA kernel. None of this needs a GPU: CUDA is replaced by stand-ins where a test says so."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fkal import device as device_mod
from fkal import run_state
from fkal import settings as settings_mod
from fkal.cli import build_parser, main
from fkal.config import Config
from fkal.data import DATASETS, folder
from fkal.io import read_jsonl
from fkal.models import build_model, lenet

ROOT = Path(__file__).resolve().parents[1]


def common(root: Path, out: Path) -> list[str]:
    return ["--data-root", str(root), "--out", str(out), "--run-stop", "1", "--imbalance-ratios", "4",
            "--train-size", "200", "--val-size", "60", "--unsup-epochs", "1", "--epochs", "1", "--iterations", "1",
            "--pool-size", "10", "--no-progress", "--eval-batch", "128"]


def forbid(monkeypatch, *names: str) -> None:
    """Make these ``torch.cuda`` functions fail the test when called."""
    def called(*args, **kwargs):
        raise AssertionError("CUDA was called")
    for name in names:
        monkeypatch.setattr(torch.cuda, name, called)


@pytest.fixture
def switches(monkeypatch):
    """Restore torch's determinism and TF32 switches and CUBLAS_WORKSPACE_CONFIG after the test; the variable
    starts unset."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    monkeypatch.delenv(device_mod.CUBLAS_VARIABLE, raising=False)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]


# ----------------------------------------------------------------------------------------------------------------
# Choosing the device
# ----------------------------------------------------------------------------------------------------------------
def test_without_gpu_the_cpu_is_chosen_without_any_cuda_call(monkeypatch):
    forbid(monkeypatch, "is_available", "device_count", "set_device", "current_device", "_lazy_init")
    assert device_mod.select_device(None) == torch.device("cpu")
    assert device_mod.device_from_args(build_parser().parse_args([])) == torch.device("cpu")


def test_gpu_without_cuda_is_one_error_line_and_writes_nothing(tiny_mnist, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    forbid(monkeypatch, "set_device", "_lazy_init")
    out = tmp_path / "out"
    assert main(["--initial", "--gpu", "0"] + common(tiny_mnist, out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --gpu 0: no CUDA device is visible here") and "--allow-cpu-fallback" in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (out / "MNIST").exists()


def test_gpu_that_does_not_exist_is_one_error_line(tiny_mnist, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    forbid(monkeypatch, "set_device", "_lazy_init")
    assert main(["--initial", "--gpu", "2"] + common(tiny_mnist, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --gpu 2: this machine has 2 CUDA devices (0-1)") and len(err.strip().splitlines()) == 1


def test_negative_gpu_is_refused_when_the_line_is_parsed(capsys):
    assert main(["--gpu", "-1", "--list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument --gpu: must be at least 0") and len(err.strip().splitlines()) == 1


def test_cpu_fallback_is_one_warning_line(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    forbid(monkeypatch, "set_device", "_lazy_init")
    args = build_parser().parse_args(["--gpu", "3", "--allow-cpu-fallback"])
    assert device_mod.device_from_args(args) == torch.device("cpu")
    err = capsys.readouterr().err
    assert err.startswith("warning: --gpu 3: no CUDA device is visible here") and len(err.strip().splitlines()) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device_mod.select_device(5, allow_cpu_fallback=True) == torch.device("cpu")
    assert "this machine has 2 CUDA devices" in capsys.readouterr().err


@pytest.mark.parametrize("flags, deterministic", [([], True), (["--nondeterministic"], False)])
def test_gpu_n_is_configured_then_made_current(monkeypatch, flags, deterministic):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    calls = []
    monkeypatch.setattr(device_mod, "configure_cuda", lambda det: calls.append(("configure", det)))
    monkeypatch.setattr(torch.cuda, "set_device", lambda n: calls.append(("set_device", n)))
    args = build_parser().parse_args(["--gpu", "2"] + flags)
    assert device_mod.device_from_args(args) == torch.device("cuda", 2)
    assert calls == [("configure", deterministic), ("set_device", 2)]      # determinism before the first CUDA op


# ----------------------------------------------------------------------------------------------------------------
# Determinism switches and what records carry
# ----------------------------------------------------------------------------------------------------------------
def test_determinism_sets_the_documented_switches_and_reads_them_back(switches):
    device_mod.configure_cuda(True)
    assert os.environ[device_mod.CUBLAS_VARIABLE] == ":4096:8"
    assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    on = device_mod.cuda_settings(torch.device("cuda", 0))
    assert on == {"deterministic_algorithms": True, "deterministic_warn_only": False, "cudnn_deterministic": True,
                  "cudnn_benchmark": False, "cublas_workspace_config": ":4096:8",
                  "float32_matmul_precision": torch.get_float32_matmul_precision(),
                  "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}
    device_mod.configure_cuda(False)
    off = device_mod.cuda_settings(torch.device("cuda", 0))
    assert not torch.are_deterministic_algorithms_enabled()
    assert (off["deterministic_algorithms"], off["cudnn_deterministic"], off["cudnn_benchmark"]) == (False, False, True)
    assert off["cublas_workspace_config"] == ":4096:8"                  # left as it was
    assert device_mod.cuda_settings(torch.device("cpu")) is None


def test_cublas_setting_is_kept_or_refused_when_it_would_come_too_late(switches, monkeypatch):
    monkeypatch.setenv(device_mod.CUBLAS_VARIABLE, ":16:8")             # the other deterministic value: kept
    device_mod.configure_cuda(True)
    assert os.environ[device_mod.CUBLAS_VARIABLE] == ":16:8"
    monkeypatch.setenv(device_mod.CUBLAS_VARIABLE, ":0:0")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(RuntimeError, match="already initialized"):
        device_mod.configure_cuda(True)
    assert os.environ[device_mod.CUBLAS_VARIABLE] == ":0:0"
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    device_mod.configure_cuda(True)
    assert os.environ[device_mod.CUBLAS_VARIABLE] == ":4096:8"


def test_cuda_switches_are_a_setting_and_earlier_runs_still_resume(switches):
    spec = DATASETS["mnist"]
    raw = SimpleNamespace(fingerprint=lambda: {"train": "a", "test": "b"})
    s = run_state.Settings(out=Path("out"), spec=spec, train=spec.train, unsup=spec.unsup, query_size=10,
                           iterations=2, device=torch.device("cpu"))

    def settings(device):
        return run_state.config_settings(replace(s, device=device), raw, Config("random"), 0, 4.0, 1)
    cpu = settings(torch.device("cpu"))
    assert cpu["cuda"] is None
    earlier = {k: v for k, v in cpu.items() if k != "cuda"}             # a record made before the setting existed
    assert settings_mod.differences(earlier, cpu) == []
    assert settings_mod.settings_id(earlier) == settings_mod.settings_id(cpu)
    device_mod.configure_cuda(True)
    deterministic = settings(torch.device("cuda", 0))
    device_mod.configure_cuda(False)
    fast = settings(torch.device("cuda", 0))
    assert deterministic["cuda"]["deterministic_algorithms"] and fast["cuda"]["cudnn_benchmark"]
    diffs = settings_mod.differences(deterministic, fast)
    assert {d[0] for d in diffs} == {"cuda.deterministic_algorithms", "cuda.cudnn_deterministic",
                                     "cuda.cudnn_benchmark"}
    assert "(--gpu/--nondeterministic)" in settings_mod.describe(diffs)
    assert len({settings_mod.settings_id(x) for x in (cpu, deterministic, fast)}) == 3
    assert {"device", "cuda.deterministic_algorithms"} <= {d[0] for d in settings_mod.differences(earlier, fast)}


# ----------------------------------------------------------------------------------------------------------------
# No CUDA in a CPU run
# ----------------------------------------------------------------------------------------------------------------
def test_a_cpu_run_initializes_no_cuda_even_where_a_gpu_is_present(tiny_mnist, tmp_path, monkeypatch):
    """A machine with a GPU (CUDA reported present), a run without --gpu: nothing may initialize CUDA (a context on
    GPU 0 costs memory and time there). Tensors put on a CUDA device initialize it through
    ``torch.cuda._lazy_init``, made to fail here; pinned memory does not pass there, so no batch may be pinned."""
    from tests.test_pipelines import WNIDS, write_image_folder
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)
    monkeypatch.setattr(folder, "_announced", set())                   # the loader choice is printed once a process
    forbid(monkeypatch, "_lazy_init", "set_device", "current_device")
    initialized_before = torch.cuda.is_initialized()
    out = tmp_path / "out"
    assert main(["--initial"] + common(tiny_mnist, out)) == 0
    assert main(common(tiny_mnist, out) + ["--only", "random"]) == 0
    record = read_jsonl(out / "MNIST" / "run0" / "results.jsonl")[0][0]
    assert record["settings"]["device"] == "cpu" and record["settings"]["cuda"] is None
    # the image-folder loader: a CPU run neither pins memory nor picks DALI
    spec = DATASETS["imagenet"]
    small = replace(spec.load, num_classes=len(WNIDS), image_size=32, resize_size=36, num_workers=0)
    raw = small(str(write_image_folder(tmp_path / "folder")))
    passes = [list(raw.train.batches(np.arange(12), 5, shuffle=True, generator=torch.Generator().manual_seed(0),
                                     augment=augment)) for augment in (False, True)]
    assert all(not x.is_pinned() and x.device.type == "cpu" for batches in passes for _, x in batches)
    assert type(raw.train).__name__ == "FolderSource" and raw.train.get(np.arange(3)).shape == (3, 3, 32, 32)
    assert torch.cuda.is_initialized() == initialized_before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: without one no CUDA context can be opened")
def test_a_cpu_run_opens_no_cuda_context_on_a_gpu_machine(tiny_mnist, tmp_path):
    """The same on a machine with a GPU, by torch's and the driver's account, in a fresh process: pinned memory
    opens a CUDA context without passing through ``torch.cuda._lazy_init`` (so without ``is_initialized()``
    knowing), which the driver's primary-context state shows."""
    out = tmp_path / "out"
    code = ("import sys, torch; from fkal.cli import main; argv = sys.argv[1:]; "
            "assert main(['--initial'] + argv) == 0 and main(argv + ['--only', 'pfk-phat-L20']) == 0; "
            "print(torch.cuda.is_initialized(), any(torch._C._cuda_hasPrimaryContext(i) "
            "for i in range(torch.cuda.device_count())))")
    proc = subprocess.run([sys.executable, "-c", code] + common(tiny_mnist, out), capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False False"


# ----------------------------------------------------------------------------------------------------------------
# Models: no operation without a deterministic CUDA kernel
# ----------------------------------------------------------------------------------------------------------------
def nondeterministic_nodes() -> dict[str, str]:
    """``{autograd node name: operation}`` of the operations that the documentation of
    ``torch.use_deterministic_algorithms`` lists as raising a RuntimeError when differentiated on CUDA, found by
    running each on a small CPU tensor (node names do not depend on the device)."""
    def x(*shape):
        return torch.rand(*shape, requires_grad=True)
    examples = {
        "AvgPool3d": lambda: nn.AvgPool3d(1)(x(1, 1, 2, 2, 2)),
        "AdaptiveAvgPool2d": lambda: nn.AdaptiveAvgPool2d(2)(x(1, 1, 5, 5)),
        "AdaptiveAvgPool3d": lambda: nn.AdaptiveAvgPool3d(2)(x(1, 1, 5, 5, 5)),
        "AdaptiveMaxPool2d": lambda: nn.AdaptiveMaxPool2d(2)(x(1, 1, 5, 5)),
        "FractionalMaxPool2d": lambda: F.fractional_max_pool2d(x(1, 1, 6, 6), 2, output_size=3,
                                                               _random_samples=torch.full((1, 1, 2), 0.5)),
        "FractionalMaxPool3d": lambda: F.fractional_max_pool3d(x(1, 1, 6, 6, 6), 2, output_size=3,
                                                               _random_samples=torch.full((1, 1, 3), 0.5)),
        "interpolate linear": lambda: F.interpolate(x(1, 1, 4), scale_factor=2, mode="linear"),
        "interpolate bilinear": lambda: F.interpolate(x(1, 1, 4, 4), scale_factor=2, mode="bilinear"),
        "interpolate bilinear antialias": lambda: F.interpolate(x(1, 1, 8, 8), size=3, mode="bilinear",
                                                                antialias=True),
        "interpolate bicubic": lambda: F.interpolate(x(1, 1, 4, 4), scale_factor=2, mode="bicubic"),
        "interpolate trilinear": lambda: F.interpolate(x(1, 1, 4, 4, 4), scale_factor=2, mode="trilinear"),
        "ReflectionPad1d": lambda: nn.ReflectionPad1d(1)(x(1, 1, 4)),
        "ReflectionPad2d": lambda: nn.ReflectionPad2d(1)(x(1, 1, 4, 4)),
        "ReflectionPad3d": lambda: nn.ReflectionPad3d(1)(x(1, 1, 4, 4, 4)),
        "NLLLoss (2d)": lambda: nn.NLLLoss(reduction="none")(x(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long)),
        "CTCLoss": lambda: nn.CTCLoss(reduction="none")(x(5, 1, 4), torch.tensor([[1, 2]]), [5], [2]),
        "EmbeddingBag max": lambda: nn.EmbeddingBag(5, 3, mode="max")(torch.tensor([[0, 1]])),
        "grid_sample": lambda: F.grid_sample(x(1, 1, 4, 4), torch.zeros(1, 2, 2, 2), align_corners=False),
    }
    return {make().grad_fn.name(): name for name, make in examples.items()}


def graph_nodes(tensor: torch.Tensor) -> set[str]:
    """Names of every autograd node that ``tensor.backward()`` would run."""
    seen, stack, names = set(), [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(node.name())
        stack.extend(n for n, _ in node.next_functions)
    return names


def test_the_models_backward_passes_have_deterministic_cuda_kernels():
    raising = nondeterministic_nodes()
    assert len(raising) == 18                                           # every example gave its own node
    probe = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(2))  # the check finds such a node
    assert "AdaptiveAvgPool2d" in {raising.get(n) for n in graph_nodes(probe(torch.rand(1, 3, 8, 8)).sum())}

    torch.manual_seed(0)
    from vaal.models import VAE, Discriminator, with_loss_module
    from vaal.train import kl_divergence
    cases = {"lenet": (lenet(), torch.rand(4, 1, 28, 28))}
    for name, size in (("resnet10-small", 32), ("resnet18-small", 32), ("resnet18", 64)):
        cases[name] = (build_model(name, 10), torch.rand(2, 3, size, size))
        cases[name + " mc-dropout"] = (build_model(name, 10, mc_dropout=True), torch.rand(2, 3, size, size))
    found = {}
    for name, (model, x) in cases.items():
        logits, taps = model(x)
        loss = F.cross_entropy(logits, torch.arange(len(x)) % logits.shape[1])
        acts = list(taps.values())                              # Fisher scores: gradients at the taps
        found[name] = graph_nodes(loss + sum(a.sum() for a in acts) * 0)
    wrapped = with_loss_module(lenet())
    logits, taps = wrapped(torch.rand(4, 1, 28, 28))
    found["lenet + loss module"] = graph_nodes(wrapped.predict_loss(taps).sum() + logits.sum())
    vae, disc = VAE(1, latent=4, width=4, image_size=32, rank_dim=1), Discriminator(4, 8, 1, rank_dim=1)
    x, r = torch.rand(3, 1, 32, 32), torch.rand(3)
    recon, z, mu, logvar = vae(x, r)
    found["VAE + discriminator"] = graph_nodes(F.mse_loss(recon, x) + kl_divergence(mu, logvar, "sum")
                                               + disc(mu, r).sum())
    for name, nodes in found.items():
        assert len(nodes) > 5, name
        bad = sorted(raising[n] for n in nodes if n in raising)
        assert not bad, f"{name} differentiates {bad}, which raise on CUDA with deterministic algorithms on"
