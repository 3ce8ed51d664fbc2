
import numpy as np
import pytest
import torch

from fkal.data import Schedule
from fkal.data.mnist import load_mnist
from fkal.io import append_jsonl, atomic_path, read_jsonl, save_torch
from fkal.models import lenet
from fkal.training import evaluate, rotation_batch, train


def test_rotation_batch_has_four_rotations_with_targets():
    x = torch.arange(2 * 9, dtype=torch.float32).view(2, 1, 3, 3)
    xr, y = rotation_batch(x)
    assert xr.shape == (8, 1, 3, 3) and y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    for k in range(4):
        for i in range(2):
            torch.testing.assert_close(xr[k * 2 + i], torch.rot90(x[i], k, dims=(1, 2)))
    # a 90 degree turn moves the top-right corner to the top-left
    assert xr[2, 0, 0, 0] == x[0, 0, 0, 2]


def test_training_learns_the_tiny_digits(tiny_mnist, devices):
    raw = load_mnist(str(tiny_mnist), download=False)
    torch.manual_seed(0)
    model = lenet().to(devices)
    idx = np.arange(300)
    sched = Schedule(epochs=3, lr=0.05, batch_size=25, milestones=(2,), momentum=0.5)
    before = evaluate(model, raw.test, np.arange(200), raw.test.labels, 10, devices).overall
    train(model, raw.train, idx, raw.train.labels[idx], sched, devices, torch.Generator().manual_seed(0),
          progress=False)
    acc = evaluate(model, raw.test, np.arange(200), raw.test.labels, 10, devices)
    assert acc.overall > 90 > before and len(acc.per_class) == 10


def test_schedule_squeezed_into_fewer_epochs():
    s = Schedule(epochs=50, lr=0.05, batch_size=25, milestones=(15, 30, 45))
    assert s.with_epochs(10).milestones == (3, 6, 9)
    assert s.with_epochs(50) is s


def test_interrupted_atomic_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "model.pt"
    save_torch({"v": 1}, path)
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half a file")
            raise KeyboardInterrupt
    assert torch.load(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]        # no temporary left behind


def test_results_file_skips_a_broken_line(tmp_path):
    path = tmp_path / "results.jsonl"
    append_jsonl({"a": 1}, path)
    with open(path, "a") as f:
        f.write('{"a": 2, "b"\n')
    append_jsonl({"a": 3}, path)
    records, warnings = read_jsonl(path)
    assert [r["a"] for r in records] == [1, 3]
    assert len(warnings) == 1 and f"{path}:2" in warnings[0]
