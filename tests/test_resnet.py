"""ResNet-10/18 task models (fkal/models/resnet.py): taps, MC dropout, state dicts."""
import pytest
import torch

from fkal.models import MODELS, MCDropout, build_model, copy_all_but_classifier, mc_dropout_copy, taps_for
from fkal.models.resnet import TapResNet, resnet10, resnet18

STAGES = {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}


@pytest.mark.parametrize("builder", [resnet10, resnet18])
def test_taps_at_32x32_with_the_small_stem(builder):
    model = builder(num_classes=10, small_input=True).eval()
    logits, taps = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    for j, (name, width) in enumerate(STAGES.items()):
        side = 32 >> j                                 # stride 1 stem, no max-pool: 32, 16, 8, 4
        assert taps[name].shape == (2, width, side, side)
    assert taps["pool"].shape == (2, 512)
    torch.testing.assert_close(taps["pool"], taps["layer4"].mean((2, 3)))
    torch.testing.assert_close(model.fc(taps["pool"]), logits)


@pytest.mark.parametrize("builder", [resnet10, resnet18])
def test_taps_at_224x224_with_the_standard_stem(builder):
    model = builder(num_classes=7, small_input=False).eval()
    with torch.no_grad():
        logits, taps = model(torch.randn(1, 3, 224, 224))
    assert logits.shape == (1, 7)
    assert [tuple(taps[n].shape) for n in STAGES] == [(1, 64, 56, 56), (1, 128, 28, 28), (1, 256, 14, 14),
                                                      (1, 512, 7, 7)]


@pytest.mark.parametrize("L", sorted(TapResNet.TAPS))
def test_descriptor_lengths(L):
    model = resnet10(small_input=True).eval()
    _, taps = model(torch.randn(1, 3, 32, 32))
    assert sum(taps[n].shape[1] for n in taps_for(model, L)) == L
    assert taps_for(model, 256) == ("layer3",) and taps_for(model, 768) == ("layer3", "layer4")


def test_taps_are_on_the_autograd_path():
    model = resnet10(small_input=True).eval()
    logits, taps = model(torch.randn(2, 3, 32, 32))
    acts = [taps[n] for n in ("layer3", "layer4", "pool")]
    grads = torch.autograd.grad(logits.sum(), acts)
    assert all(g.shape == a.shape and g.abs().sum() > 0 for g, a in zip(grads, acts))


def test_registered_builders():
    for name, small in (("resnet10", False), ("resnet10-small", True), ("resnet18", False), ("resnet18-small", True)):
        model = build_model(name, 5)
        assert isinstance(model, TapResNet) and model.fc.out_features == 5 and name in MODELS
        assert model.conv1.kernel_size == ((3, 3) if small else (7, 7))
        assert isinstance(model.maxpool, torch.nn.Identity) == small
    assert len(build_model("resnet18", 5).layer1) == 2 and len(build_model("resnet10", 5).layer1) == 1


def test_mc_dropout_is_active_only_in_the_mc_variant():
    torch.manual_seed(0)
    model = build_model("resnet10-small", 10).eval()
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(model(x)[0], model(x)[0])              # plain model in eval mode: deterministic
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    mc = mc_dropout_copy(model, "resnet10-small", 10)                  # the plain state dict loads (strict)
    assert not mc.training
    drops = [m for m in mc.modules() if isinstance(m, MCDropout)]
    assert len(drops) == 4 and all(d.p == 0.25 for d in drops)         # one per basic block
    assert not torch.allclose(mc(x)[0], mc(x)[0])                      # two stochastic passes differ in eval mode
    assert mc.state_dict().keys() == model.state_dict().keys()


def test_copy_all_but_classifier():
    torch.manual_seed(0)
    rot, cls = build_model("resnet10-small", 4), build_model("resnet10-small", 10)
    before = cls.fc.weight.clone()
    copy_all_but_classifier(rot, cls)
    for name, p in rot.state_dict().items():
        if not name.startswith("fc."):
            torch.testing.assert_close(cls.state_dict()[name], p)
    torch.testing.assert_close(cls.fc.weight, before)


def test_fisher_scores_of_a_batch_are_per_sample_in_eval_mode():
    from fkal.descriptors import fisher_scores
    torch.manual_seed(0)
    model = resnet10(small_input=True)
    model.train()
    model(torch.randn(8, 3, 32, 32))                                   # non-trivial BatchNorm running statistics
    model.eval()
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([1, 4, 7])
    logits, taps = model(x)
    batch = fisher_scores(logits, [taps["layer3"], taps["layer4"]], y)
    for i in range(3):
        logits_i, taps_i = model(x[i:i + 1])
        single = fisher_scores(logits_i, [taps_i["layer3"], taps_i["layer4"]], y[i:i + 1])
        for b, s in zip(batch, single):
            torch.testing.assert_close(b[i:i + 1], s, rtol=1e-4, atol=1e-6)
