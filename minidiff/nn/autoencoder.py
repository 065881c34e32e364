r"""The autoencoder of latent diffusion (Rombach et al. 2022): diffusion runs on its small latents
instead of on pixels.

    x (B, 3, 64, 64) ─ Encoder ─ (μ, log σ²) (B, 4, 16, 16) ─ z = μ + σ·ε ─ Decoder ─ x̂ (B, 3, 64, 64)

The encoder gives a Gaussian $q(z \mid x) = \mathcal N(\mu, \sigma^2)$ per latent element; training
minimises $|\hat x - x|$ plus a small $\beta\,\mathrm{KL}(q(z \mid x) \,\|\, \mathcal N(0, I))$ that keeps
the latents near the standard normal ("KL-regularised", ``objectives.AutoencoderObjective``).
The diffusion model later trains on ``encode(x) = scale·μ``, where ``scale`` makes those latents of
unit standard deviation (``measure_scale``: Stable Diffusion's 0.18215), and its samples become
images through ``decode(z) = Decoder(z / scale)``.

Each side is made of the U-Net's pieces (``blocks.py``) without a time embedding: per level,
ResBlocks at that level's width, then a 2× down- (encoder) or up-sampling (decoder), and a middle
ResBlock at the smallest resolution. There are no skip connections: everything the decoder knows
about the image must pass through the latent. ``len(channels)`` levels shrink H and W by
$f = 2^{\text{len(channels)} - 1}$.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from ..losses import kl_divergence  # noqa: F401  (notebook 08 meets it here; it is a loss, so it lives in losses)
from .blocks import Attention, Downsample, ResBlock, Upsample, group_norm

LOGVAR_RANGE = (-30.0, 20.0)        # as Stable Diffusion's DiagonalGaussianDistribution


@dataclass
class AutoencoderConfig:
    """Everything that defines an autoencoder: images of ``in_channels`` × ``image_size``², level widths
    ``channels`` (f = 2^(len(channels) − 1)), ``blocks_per_level`` ResBlocks per level, latents of
    ``latent_channels``; ``mid_attention`` adds one self-attention in each middle (as Stable Diffusion's)."""
    in_channels: int = 3
    image_size: int = 64
    channels: tuple[int, ...] = (64, 128, 128)
    blocks_per_level: int = 1
    latent_channels: int = 4
    mid_attention: bool = False

    @property
    def factor(self) -> int:
        """f = 2^(len(channels) − 1): how much the encoder shrinks H and W."""
        return 2 ** (len(self.channels) - 1)


def _check_config(cfg: AutoencoderConfig) -> None:
    def positive_int(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1

    for name in ("in_channels", "image_size", "blocks_per_level", "latent_channels"):
        if not positive_int(getattr(cfg, name)):
            raise ValueError(f"AutoencoderConfig.{name} must be an int >= 1; got {getattr(cfg, name)!r}")
    if not isinstance(cfg.channels, tuple) or not cfg.channels or not all(positive_int(c) for c in cfg.channels):
        raise ValueError(f"AutoencoderConfig.channels must be a non-empty tuple of ints >= 1 (one width per "
                         f"level); got {cfg.channels!r}")
    if cfg.image_size % cfg.factor:
        raise ValueError(f"AutoencoderConfig.image_size must be divisible by f = 2^(len(channels) − 1) = "
                         f"{cfg.factor}; got {cfg.image_size} (use fewer levels, or another size)")
    if not isinstance(cfg.mid_attention, bool):
        raise ValueError(f"AutoencoderConfig.mid_attention must be True or False; got {cfg.mid_attention!r}")


# -- the math -------------------------------------------------------------------------------------
def reparameterise(mean: Tensor, logvar: Tensor, noise: Optional[Tensor] = None,
                   generator: Optional[torch.Generator] = None) -> Tensor:
    r"""A sample of $q(z \mid x) = \mathcal N(\mu, \sigma^2)$ that gradients flow through:
    $z = \mu + \exp(\tfrac12 \log\sigma^2)\,\varepsilon$, $\varepsilon \sim \mathcal N(0, I)$.

    The randomness is all in ε, which does not depend on μ or σ, so ∂z/∂μ = 1 and
    ∂z/∂logσ² = ½σε exist (the "reparameterisation trick"). ``noise``: ε itself (for tests and
    exercises), else drawn with ``generator`` (default: the global one)."""
    if mean.shape != logvar.shape:
        raise ValueError(f"mean and logvar must have the same shape; got {tuple(mean.shape)} and "
                         f"{tuple(logvar.shape)}")
    if noise is None:
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    elif noise.shape != mean.shape:
        raise ValueError(f"noise must have mean's shape {tuple(mean.shape)}; got {tuple(noise.shape)}")
    return mean + torch.exp(0.5 * logvar) * noise


# -- the networks ---------------------------------------------------------------------------------
def _middle(ch: int, cfg: AutoencoderConfig) -> nn.Sequential:
    """A ResBlock at the smallest resolution (with self-attention after it if ``mid_attention``)."""
    return nn.Sequential(ResBlock(ch, ch), *([Attention(ch, head_dim=ch)] if cfg.mid_attention else []))


class Encoder(nn.Module):
    r"""x (B, in_channels, H, W) -> $[\mu, \log\sigma^2]$ (B, 2·latent_channels, H/f, W/f): conv in, per level
    ``blocks_per_level`` ResBlocks and a Downsample (not after the last), a middle ResBlock, then GN, SiLU, conv."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        ch = cfg.channels[0]
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        layers: list[nn.Module] = []
        for i, width in enumerate(cfg.channels):
            for _ in range(cfg.blocks_per_level):
                layers.append(ResBlock(ch, width))
                ch = width
            if i < len(cfg.channels) - 1:
                layers.append(Downsample(ch))
        self.levels = nn.Sequential(*layers)
        self.mid = _middle(ch, cfg)
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), nn.Conv2d(ch, 2 * cfg.latent_channels, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.mid(self.levels(self.conv_in(x))))


class Decoder(nn.Module):
    r"""z (B, latent_channels, h, w) -> $\hat x$ (B, in_channels, f·h, f·w): the Encoder's mirror image —
    conv in, the middle ResBlock, the levels in reverse (ResBlocks, then an Upsample, except after
    level 0), GN, SiLU, conv out."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        ch = cfg.channels[-1]
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch, 3, padding=1)
        self.mid = _middle(ch, cfg)
        layers: list[nn.Module] = []
        for i, width in reversed(list(enumerate(cfg.channels))):
            for _ in range(cfg.blocks_per_level):
                layers.append(ResBlock(ch, width))
                ch = width
            if i > 0:
                layers.append(Upsample(ch))
        self.levels = nn.Sequential(*layers)
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), nn.Conv2d(ch, cfg.in_channels, 3, padding=1))

    def forward(self, z: Tensor) -> Tensor:
        return self.out(self.levels(self.mid(self.conv_in(z))))


class Autoencoder(nn.Module):
    r"""The KL-regularised autoencoder: ``forward(x)`` -> $(\hat x, \mu, \log\sigma^2)$ for training;
    ``encode(x)`` = scale·μ and ``decode(z)`` = Decoder(z / scale) for latent diffusion.

    ``scale`` is a buffer saved with the weights: 1 until ``measure_scale(images)`` sets it to
    $1/\mathrm{std}(\mu)$ over a set of images, so that the latents diffusion sees have unit spread.
    Images are (B, in_channels, H, W) in [-1, 1], H and W divisible by f (any such size works;
    ``config.image_size`` is the size it was built for and ``latent_shape`` is the latents' shape there).
    """

    def __init__(self, config: AutoencoderConfig = AutoencoderConfig()):
        super().__init__()
        _check_config(config)
        self.config = config
        self.encoder, self.decoder = Encoder(config), Decoder(config)
        self.register_buffer("scale", torch.tensor(1.0, dtype=torch.float32))

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(latent_channels, image_size/f, image_size/f): one image's latent, e.g. (4, 16, 16) for 64×64."""
        side = self.config.image_size // self.config.factor
        return self.config.latent_channels, side, side

    def moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""$(\mu, \log\sigma^2)$ of $q(z \mid x)$, each (B, latent_channels, H/f, W/f); log σ² is clamped to
        [−30, 20] (as Stable Diffusion does), so that σ² = exp(log σ²) neither underflows to 0 nor overflows."""
        self._check_images(x)
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def forward(self, x: Tensor, generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor, Tensor]:
        r"""The training pass: $(\mu, \log\sigma^2)$ = moments(x), $z = \mu + \sigma\varepsilon$, $\hat x$ = Decoder(z).
        Returns $(\hat x, \mu, \log\sigma^2)$; ``scale`` plays no part (it only matters to diffusion)."""
        mean, logvar = self.moments(x)
        return self.decoder(reparameterise(mean, logvar, generator=generator)), mean, logvar

    def encode(self, x: Tensor) -> Tensor:
        r"""The latent diffusion trains on: scale·μ (deterministic: the mean, not a sample)."""
        return self.scale * self.moments(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        r"""Images from latents: Decoder(z / scale), so that decode(encode(x)) = Decoder(μ)."""
        channels = self.config.latent_channels
        if not isinstance(z, Tensor) or not z.is_floating_point() or z.ndim != 4 or z.shape[1] != channels:
            raise ValueError(f"z must be a float tensor of latents (B, {channels}, h, w); got "
                             f"{getattr(z, 'dtype', type(z).__name__)} {tuple(getattr(z, 'shape', ()))}")
        return self.decoder(z / self.scale)

    @torch.no_grad()
    def measure_scale(self, images: Tensor, batch_size: int = 256) -> float:
        r"""Set ``scale`` = 1 / std(μ), the standard deviation of every element of the mean latents of
        ``images`` (eval mode, in batches of ``batch_size``, no gradients); returns it. Stable Diffusion's
        0.18215 is this number for its autoencoder on its images."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1; got {batch_size!r}")
        if not isinstance(images, Tensor) or images.ndim != 4 or len(images) == 0:
            raise ValueError(f"images must be a non-empty tensor (N, {self.config.in_channels}, H, W); got "
                             f"{type(images).__name__} {tuple(getattr(images, 'shape', ()))}")
        was_training, device = self.training, self.scale.device
        self.eval()
        try:
            means = [self.moments(images[i:i + batch_size].to(device))[0].float()
                     for i in range(0, len(images), batch_size)]
        finally:
            self.train(was_training)
        std = torch.cat(means).std()
        if not std > 0:
            raise ValueError(f"the mean latents of these images have standard deviation {std.item()}, so there is "
                             f"no scale that gives them unit spread (an untrained or broken autoencoder?)")
        self.scale.fill_(1.0 / std.item())
        return self.scale.item()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _check_images(self, x: Tensor) -> None:
        cfg, f = self.config, self.config.factor
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a float tensor of images (B, {cfg.in_channels}, H, W) in [-1, 1]; got "
                            f"{getattr(x, 'dtype', type(x).__name__)}")
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"x must have shape (B, {cfg.in_channels}, H, W); got {tuple(x.shape)}")
        if x.shape[2] % f or x.shape[3] % f:
            raise ValueError(f"x's H and W must be divisible by f = {f} (the encoder halves them "
                             f"{len(cfg.channels) - 1} times); got {tuple(x.shape[2:])}")
