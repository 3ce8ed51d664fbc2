import pytest
import torch

from fkal.models import LeNet, copy_all_but_classifier, lenet, mc_dropout_copy, taps_for


@pytest.mark.parametrize("L", [0, 10, 20, 30, 80, 90])
def test_lenet_taps_give_descriptor_length(L):
    model = lenet().eval()
    logits, taps = model(torch.randn(3, 1, 28, 28))
    assert logits.shape == (3, 10)
    names = taps_for(model, L)
    assert sum(taps[n].shape[1] for n in names) == L
    assert taps["conv1"].shape == (3, 10, 12, 12) and taps["conv2"].shape == (3, 20, 4, 4)
    assert taps["fc1"].shape == (3, 50) and taps["fc2"] is logits


def test_unknown_descriptor_length_names_the_choices():
    with pytest.raises(ValueError, match="choose one of"):
        taps_for(lenet(), 40)


def test_mc_dropout_is_active_only_in_the_mc_variant():
    torch.manual_seed(0)
    model = lenet().eval()
    x = torch.randn(8, 1, 28, 28)
    model.train()                                      # even in training mode the plain model has no dropout
    a, b = model(x)[0], model(x)[0]
    torch.testing.assert_close(a, b)
    mc = mc_dropout_copy(model, "lenet", 10)
    p, q = mc(x)[0], mc(x)[0]
    assert not torch.allclose(p, q)                    # two stochastic passes differ, in eval mode too
    assert {n for n, m in mc.named_modules() if isinstance(m, torch.nn.Dropout)} == {"drop_conv", "drop_fc"}
    assert mc.drop_conv.p == 0.25 and mc.drop_fc.p == 0.5


def test_copy_all_but_classifier():
    torch.manual_seed(0)
    rot, cls = LeNet(num_classes=4), LeNet(num_classes=10)
    before = cls.fc2.weight.clone()
    copy_all_but_classifier(rot, cls)
    for name, p in rot.state_dict().items():
        if name.startswith("fc2."):
            continue
        torch.testing.assert_close(cls.state_dict()[name], p)
    torch.testing.assert_close(cls.fc2.weight, before)
