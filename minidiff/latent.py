r"""Latent diffusion (Rombach et al. 2022): the same diffusion, run in an autoencoder's latent space.

    image x (3×64×64) ─ encode ─▶ z = s·μ(x) (4×16×16) ─ noise, train, sample here ─▶ ẑ ─ decode ─▶ x̂

The autoencoder (``minidiff.nn.autoencoder``) is trained first and then frozen. Its latent has
f² = 16 times fewer positions than the image (f = 4), so each U-Net step costs far less; the decoder
runs once per image, at the end. ``s`` (``Autoencoder.scale``) is 1/std of the latents, measured on
the training images: it makes z unit-variance, so the noise schedule means what it meant for pixels
in [-1, 1] (Stable Diffusion's 0.18215 is the same number for its autoencoder).

Every function here takes its models as arguments. ``text_to_image(prompts)``, the course's last cell
(captions in, images out), lives with the shipped models it loads (``minidiff.pretrained``) and calls
``sample_images`` here.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from . import samplers
from .nn.text import Tokenizer
from .schedules import NoiseSchedule

MAX_TOKENS = 16                  # the longest Scenes caption has 15 words


def caption_tokenizer(max_tokens: int = MAX_TOKENS) -> Tokenizer:
    """The tokenizer of the Scenes captions: one id per word of ``data.CAPTION_WORDS``, 0 for padding."""
    from .data import CAPTION_WORDS
    return Tokenizer(tuple(CAPTION_WORDS), max_tokens)


def _batches(x: Tensor, batch_size: int) -> list[Tensor]:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1; got {batch_size!r}")
    return list(x.split(batch_size))


@torch.no_grad()
def encode_images(autoencoder: nn.Module, images: Tensor, batch_size: int = 256) -> Tensor:
    """The scaled latent means $z = s\\,\\mu(x)$ of ``images`` (N, 3, H, W), ``batch_size`` at a time,
    computed on the autoencoder's device and returned there."""
    device = next(autoencoder.parameters()).device
    return torch.cat([autoencoder.encode(part.to(device)) for part in _batches(images, batch_size)])


@torch.no_grad()
def decode_latents(autoencoder: nn.Module, z: Tensor, batch_size: int = 256) -> Tensor:
    """Images $\\hat x = D(z / s)$ of latents ``z``, clamped to [-1, 1], on the autoencoder's device."""
    device = next(autoencoder.parameters()).device
    return torch.cat([autoencoder.decode(part.to(device)).clamp(-1, 1) for part in _batches(z, batch_size)])


@torch.no_grad()
def sample_images(model: nn.Module, s: NoiseSchedule, autoencoder: nn.Module, tokens: Tensor, steps: int = 20,
                  guidance_scale: samplers.GuidanceArg = None, sampler: samplers.SamplerName = "dpm++",
                  generator: Optional[torch.Generator] = None, batch_size: int = 500,
                  dtype: Optional[torch.dtype] = None, progress: Optional[bool] = None) -> Tensor:
    """Images for captions ``tokens`` (N, L): sample N latents with ``sampler`` (guided by ``guidance_scale``
    against the empty caption), then decode them. Everything runs on the schedule's device. ``progress``: the
    sampler's bar (``samplers.sample``)."""
    cfg = model.config
    shape = (tokens.shape[0], cfg.in_channels, cfg.image_size, cfg.image_size)
    z = samplers.sample(sampler, model, s, shape, steps, tokens.to(s.device), guidance_scale,
                        generator=generator, batch_size=batch_size, dtype=dtype, progress=progress)
    return decode_latents(autoencoder, z)
