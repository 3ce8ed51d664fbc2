"""The VAE and discriminator of VAAL / TA-VAAL, the loss prediction module of learning loss / TA-VAAL, and the
task-model wrapper that carries that module.

Architectures follow the official VAAL code (Sinha et al. 2019, ``model.py``), generalised to any width and any
input size S divisible by 16 (docs/acquisitions/vaal.md):

  encoder   four Conv k4 s2 p1 (no bias) + BN + ReLU, widths w, 2w, 4w, 8w   [B, C, S, S] -> [B, 8w, S/16, S/16]
            (reference w = 128; the FK paper's MNIST adaptation halves every width, w = 64), flatten,
            two linear heads mu and logvar                                   -> [B, z] each (z = 32)
  decoder   linear (z [+1 rank]) -> 8w x S/8 x S/8, three ConvTranspose k4 s2 p1 (no bias) + BN + ReLU,
            a 1x1 ConvTranspose to C channels, no output activation          -> [B, C, S, S]
  discrim.  MLP on mu [+ rank]: ``layers`` hidden Linear + ReLU of ``hidden`` units, Linear to 1, sigmoid
            (reference 2 x 512; the MNIST adaptation 4 x 256)

For S = 32 the encoder ends at 2 x 2 and the decoder starts at 4 x 4, exactly as in the reference (which
flattens 1024 x 2 x 2 and decodes from 1024 x 4 x 4). Weights are Kaiming-normal initialised as in the
reference (``kaiming_init``).

The loss prediction module (Yoo and Kweon 2019, ``LossNet``): per tap global average pool, Linear to 128, ReLU;
the concatenation goes through Linear to 1. TA-VAAL (Kim et al. 2021) uses the same module as its "ranker".
"""
from __future__ import annotations

import zlib
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------------------------------------------
# Input conversion: the shared sources give normalized images; the VAE wants [0, 1] at S x S
# ----------------------------------------------------------------------------------------------------------------
def to_vae_input(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, size: int = 32) -> torch.Tensor:
    """Normalized images ``[B, C, H, W]`` -> ``[B, C, size, size]`` in [0, 1].

    Un-normalizes with the source's ``mean`` / ``std`` (``[1, C, 1, 1]``). Smaller images are zero-padded
    around (MNIST 28 x 28 -> 32 x 32 with 2 pixels on every side, as in VAAL's MNIST adaptation); larger or
    non-square ones are resized (bilinear, antialiased), e.g. ImageNet crops to 32 or 64.
    """
    x = (x * std.to(x.device) + mean.to(x.device)).clamp_(0.0, 1.0)
    h, w = x.shape[-2:]
    if h == size and w == size:
        return x
    if h <= size and w <= size:
        top, left = (size - h) // 2, (size - w) // 2
        return F.pad(x, (left, size - w - left, top, size - h - top))
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def kaiming_init(module: nn.Module) -> None:
    """The reference initialisation: Kaiming-normal weights and zero biases for Linear and (transposed)
    convolutions, unit weight and zero bias for batch norm."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _block(conv: nn.Module, channels: int) -> list[nn.Module]:
    return [conv, nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]


# ----------------------------------------------------------------------------------------------------------------
# VAE and discriminator
# ----------------------------------------------------------------------------------------------------------------
class VAE(nn.Module):
    """VAAL's VAE; with ``rank_dim=1`` TA-VAAL's conditional VAE (the rank r is concatenated to z before the
    decoder: ``Linear(z + 1, ...)``, as in the TA-VAAL code)."""

    def __init__(self, channels: int = 3, latent: int = 32, width: int = 128, image_size: int = 32,
                 rank_dim: int = 0):
        super().__init__()
        if image_size % 16 or image_size < 16:
            raise ValueError(f"the VAE input size must be a multiple of 16 (got {image_size})")
        w = [width, 2 * width, 4 * width, 8 * width]
        self.channels, self.latent, self.image_size, self.rank_dim = channels, latent, image_size, rank_dim
        self.top = w[3]
        self.enc_side, self.dec_side = image_size // 16, image_size // 8
        self.encoder = nn.Sequential(
            *_block(nn.Conv2d(channels, w[0], 4, 2, 1, bias=False), w[0]),   # [B, w,  S/2,  S/2]
            *_block(nn.Conv2d(w[0], w[1], 4, 2, 1, bias=False), w[1]),       # [B, 2w, S/4,  S/4]
            *_block(nn.Conv2d(w[1], w[2], 4, 2, 1, bias=False), w[2]),       # [B, 4w, S/8,  S/8]
            *_block(nn.Conv2d(w[2], w[3], 4, 2, 1, bias=False), w[3]),       # [B, 8w, S/16, S/16]
            nn.Flatten(),                                                    # [B, 8w * (S/16)^2]
        )
        flat = w[3] * self.enc_side ** 2
        self.fc_mu = nn.Linear(flat, latent)
        self.fc_logvar = nn.Linear(flat, latent)
        self.fc_dec = nn.Linear(latent + rank_dim, w[3] * self.dec_side ** 2)  # -> [B, 8w, S/8, S/8]
        self.decoder = nn.Sequential(
            *_block(nn.ConvTranspose2d(w[3], w[2], 4, 2, 1, bias=False), w[2]),  # [B, 4w, S/4, S/4]
            *_block(nn.ConvTranspose2d(w[2], w[1], 4, 2, 1, bias=False), w[1]),  # [B, 2w, S/2, S/2]
            *_block(nn.ConvTranspose2d(w[1], w[0], 4, 2, 1, bias=False), w[0]),  # [B, w,  S,   S]
            nn.ConvTranspose2d(w[0], channels, 1),                                # [B, C,  S,   S]
        )
        kaiming_init(self)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x ``[B, C, S, S]`` in [0, 1] -> (mu, logvar), each ``[B, z]``."""
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z: torch.Tensor, r: Optional[torch.Tensor] = None) -> torch.Tensor:
        """z ``[B, z]`` (and the rank r ``[B]`` or ``[B, 1]`` for TA-VAAL) -> reconstruction ``[B, C, S, S]``."""
        if self.rank_dim:
            if r is None:
                raise ValueError("this VAE is conditioned on the rank r: pass r")
            z = torch.cat([z, r.reshape(len(z), self.rank_dim).to(z.dtype)], 1)
        h = self.fc_dec(z).view(len(z), self.top, self.dec_side, self.dec_side)
        return self.decoder(h)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """z = mu + eps * exp(logvar / 2), eps ~ N(0, I) (global torch RNG)."""
        return mu + torch.randn_like(mu) * (0.5 * logvar).exp()

    def forward(self, x: torch.Tensor, r: Optional[torch.Tensor] = None):
        """-> (reconstruction ``[B, C, S, S]``, z ``[B, z]``, mu ``[B, z]``, logvar ``[B, z]``)."""
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)
        return self.decode(z, r), z, mu, logvar


class Discriminator(nn.Module):
    """MLP on the VAE mean mu (and, for TA-VAAL, the rank r): the probability that an image is labeled."""

    def __init__(self, latent: int = 32, hidden: int = 512, layers: int = 2, rank_dim: int = 0):
        super().__init__()
        self.rank_dim = rank_dim
        dims = [latent + rank_dim] + [hidden] * layers
        mods: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            mods += [nn.Linear(a, b), nn.ReLU(inplace=True)]
        mods.append(nn.Linear(dims[-1], 1))
        self.net = nn.Sequential(*mods)
        kaiming_init(self)

    def logits(self, mu: torch.Tensor, r: Optional[torch.Tensor] = None) -> torch.Tensor:
        """mu ``[B, z]`` (r ``[B]``) -> logits ``[B]``; training uses these with ``BCEWithLogits`` (the
        reference's sigmoid + BCELoss, computed stably)."""
        if self.rank_dim:
            if r is None:
                raise ValueError("this discriminator is conditioned on the rank r: pass r")
            mu = torch.cat([mu, r.reshape(len(mu), self.rank_dim).to(mu.dtype)], 1)
        return self.net(mu).squeeze(1)

    def forward(self, mu: torch.Tensor, r: Optional[torch.Tensor] = None) -> torch.Tensor:
        """-> probability of "labeled" ``[B]`` (the reference's sigmoid output)."""
        return torch.sigmoid(self.logits(mu, r))


# ----------------------------------------------------------------------------------------------------------------
# Loss prediction module (learning loss) / ranker (TA-VAAL)
# ----------------------------------------------------------------------------------------------------------------
class LossPredictionModule(nn.Module):
    """Yoo and Kweon's ``LossNet``: per tap GAP -> Linear(width, 128) -> ReLU; concat -> Linear(., 1)."""

    def __init__(self, widths: Sequence[int], hidden: int = 128):
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(w, hidden) for w in widths)
        self.out = nn.Linear(hidden * len(widths), 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """features: one tensor per tap, ``[B, C_j, H_j, W_j]`` or ``[B, C_j]`` -> predicted loss ``[B]``."""
        hs = []
        for fc, f in zip(self.fcs, features):
            pooled = f.flatten(2).mean(2) if f.dim() > 2 else f               # [B, C_j]
            hs.append(F.relu(fc(pooled)))                                     # [B, hidden]
        return self.out(torch.cat(hs, 1)).squeeze(1)                         # [B]


# Which task-model taps feed the module, by model class name; a model class may instead define ``LOSS_TAPS``.
# LeNet: its pre-activation taps conv1 [B,10,12,12], conv2 [B,20,4,4], fc1 [B,50] (not the logits fc2);
# ResNets: the four block outputs, as in the learning-loss paper.
LOSS_TAPS: dict[str, tuple[str, ...]] = {
    "LeNet": ("conv1", "conv2", "fc1"),
    "ResNet": ("layer1", "layer2", "layer3", "layer4"),
}


def loss_taps(model: nn.Module) -> tuple[str, ...]:
    """The tap names the loss prediction module reads for this task model."""
    taps = getattr(type(model), "LOSS_TAPS", None) or LOSS_TAPS.get(type(model).__name__)
    if not taps:
        raise ValueError(f"no loss-prediction taps known for {type(model).__name__}: add it to "
                         "vaal.models.LOSS_TAPS or give the class a LOSS_TAPS attribute")
    return tuple(taps)


def tap_width(model: nn.Module, name: str) -> int:
    """Channels of the tap ``name``: the output width of the last layer inside the submodule of that name
    (Conv ``out_channels``, Linear ``out_features`` or BatchNorm ``num_features``); a model class may give
    ``LOSS_TAP_WIDTHS`` instead."""
    widths = getattr(type(model), "LOSS_TAP_WIDTHS", None)
    if widths and name in widths:
        return int(widths[name])
    module = getattr(model, name, None)
    if isinstance(module, nn.Module):
        for m in reversed(list(module.modules())):
            for attr in ("out_channels", "out_features", "num_features"):
                if isinstance(getattr(m, attr, None), int):
                    return int(getattr(m, attr))
    raise ValueError(f"cannot tell the width of tap '{name}' of {type(model).__name__}: give the class a "
                     "LOSS_TAP_WIDTHS attribute")


class LossPredictionModel(nn.Module):
    """A task model with a loss prediction module on its taps (learning loss; TA-VAAL's ranker).

    ``forward`` returns the backbone's ``(logits, taps)`` unchanged; ``predict_loss(taps, detach)`` gives the
    predicted loss ``[B]`` (``detach`` cuts the module's gradient into the backbone). The state dict holds
    ``backbone.*`` and ``loss_module.*``.

    The ranking loss that trains the module, its weight and its cut-off live in ``vaal.train``
    (``lloss_extra_loss``, ``tavaal_extra_loss``).
    """

    def __init__(self, backbone: nn.Module, taps: Optional[Sequence[str]] = None, hidden: int = 128):
        super().__init__()
        self.backbone = backbone
        self.loss_taps = tuple(taps) if taps is not None else loss_taps(backbone)
        widths = [tap_width(backbone, t) for t in self.loss_taps]
        p = next(backbone.parameters(), None)
        # the module's initial weights follow from the backbone's (seeded per run), not from the global RNG
        # state, so a run gives the same module whatever ran before it in the process
        seed = 0 if p is None else zlib.crc32(p.detach().float().cpu().numpy().tobytes())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.loss_module = LossPredictionModule(widths, hidden)
        if p is not None:
            self.loss_module.to(p.device)

    def forward(self, x: torch.Tensor):
        return self.backbone(x)

    def predict_loss(self, taps: dict[str, torch.Tensor], detach: bool = False) -> torch.Tensor:
        """taps (the backbone's) -> predicted loss ``[B]``; ``detach`` stops its gradient at the taps."""
        feats = [taps[t].detach() if detach else taps[t] for t in self.loss_taps]
        return self.loss_module(feats)


def with_loss_module(model: nn.Module, spec: object = None) -> LossPredictionModel:
    """``TaskHooks.wrap``: the task model with a fresh loss prediction module (``spec`` is unused: the taps
    come from the model's class), initialised from a seed derived from the model's weights. A model that
    already carries one is returned as it is."""
    if isinstance(model, LossPredictionModel):
        return model
    return LossPredictionModel(model)
