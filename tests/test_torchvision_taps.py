"""Any torchvision architecture as a task model with taps chosen by layer name (fkal.models.torchvision_taps)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from fkal.models import build_model, copy_all_but_classifier, mc_dropout_copy, taps_for
from fkal.models.torchvision_taps import anatomy, default_taps, model_name

NAME = model_name("resnet18", ("layer3", "layer4"), 32)


def test_logits_and_taps_are_those_of_the_torchvision_model():
    torch.manual_seed(0)
    model = build_model(NAME, 5).eval()
    plain = torchvision.models.resnet18(num_classes=5).eval()
    plain.load_state_dict(model.net.state_dict())                   # the parameter names are torchvision's
    x = torch.randn(2, 3, 32, 32)
    logits, taps = model(x)
    torch.testing.assert_close(logits, plain(x))
    h = plain.maxpool(plain.relu(plain.bn1(plain.conv1(x))))
    h3 = plain.layer3(plain.layer2(plain.layer1(h)))
    torch.testing.assert_close(taps["layer3"], h3)
    torch.testing.assert_close(taps["layer4"], plain.layer4(h3))
    torch.testing.assert_close(taps["penultimate"], torch.flatten(plain.avgpool(plain.layer4(h3)), 1))
    assert type(model).TAPS == {0: (), 768: ("layer3", "layer4")} and taps_for(model, 768) == ("layer3", "layer4")
    assert type(model).classifier == "net.fc" and type(model).LOSS_TAP_WIDTHS == {"layer3": 256, "layer4": 512}


def test_fisher_scores_reach_every_tap():
    model = build_model(NAME, 5).eval()
    logits, taps = model(torch.randn(3, 3, 32, 32))
    grads = torch.autograd.grad(F.cross_entropy(logits, torch.tensor([0, 1, 2])), [taps["layer3"], taps["layer4"]])
    assert all(g.abs().sum() > 0 for g in grads)


def test_rotation_model_copies_into_the_task_model_but_the_classifier():
    rot, task = build_model(NAME, 4), build_model(NAME, 7)
    copy_all_but_classifier(rot, task)
    conv = "layer2.0.conv1"
    torch.testing.assert_close(task.net.get_submodule(conv).weight, rot.net.get_submodule(conv).weight)
    assert task.net.fc.weight.shape == (7, 512)


def test_mc_dropout_copy_is_stochastic_and_keeps_the_weights():
    torch.manual_seed(0)
    model = build_model(NAME, 5).eval()
    mc = mc_dropout_copy(model, NAME, 5)                           # resnet18 has no dropout: one on fc's input
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        passes = mc(x.repeat(200, 1, 1, 1))[0].view(200, 2, 5)     # 200 passes, each with its own dropout mask
        plain = model(x)[0]
    assert (passes.std(0) > 0).all()
    # inverted dropout on the input of a linear layer is unbiased: the mean of the passes is the plain logits
    stderr = passes.std(0) / 200 ** 0.5
    assert ((passes.mean(0) - plain).abs() < 5 * stderr).all()
    mobile = build_model(model_name("mobilenet_v3_small", ("features.9",), 32), 5, mc_dropout=True)
    assert type(mobile.net.get_submodule("classifier.2")).__name__ == "MCDropout"    # its own dropout turned on


def test_bad_taps_are_refused_with_the_layer_names():
    with pytest.raises(ValueError, match="no layer named layer9"):
        anatomy("resnet18", ("layer9",), 32)
    assert default_taps("resnet18") == ("layer3", "layer4")
    assert default_taps("mobilenet_v3_small") == ("classifier.2",)   # the input of the last Linear
