r"""Latent diffusion (Rombach et al. 2022): the same diffusion, run in an autoencoder's latent space.

    image x (3×64×64) ─ encode ─▶ z = s·μ(x) (4×16×16) ─ noise, train, sample here ─▶ ẑ ─ decode ─▶ x̂

The autoencoder (``minidiff.nn.autoencoder``) is trained first and then frozen. Its latent has
f² = 16 times fewer positions than the image (f = 4), so each U-Net step costs far less; the decoder
runs once per image, at the end. ``s`` (``Autoencoder.scale``) is 1/std of the latents, measured on
the training images: it makes z unit-variance, so the noise schedule means what it meant for pixels
in [-1, 1] (Stable Diffusion's 0.18215 is the same number for its autoencoder).

``text_to_image(prompts)`` is the course's last cell: captions in, images out, from the shipped
``shapes_vae`` and ``shapes_ldm``.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from . import samplers
from .nn.text import Tokenizer

MAX_TOKENS = 16                  # the longest Scenes caption has 15 words
DEFAULT_GUIDANCE = 3.0           # used when the shipped model's manifest records no measured scale
Device = Union[str, torch.device]


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
def sample_images(model: nn.Module, schedule, autoencoder: nn.Module, tokens: Tensor, steps: int = 20,
                  guidance_scale: samplers.GuidanceArg = None, sampler: samplers.SamplerName = "dpm++",
                  generator: Optional[torch.Generator] = None, batch_size: int = 500) -> Tensor:
    """Images for captions ``tokens`` (N, L): sample N latents with ``sampler`` (guided by ``guidance_scale``
    against the empty caption), then decode them. Everything runs on the schedule's device."""
    cfg = model.config
    shape = (tokens.shape[0], cfg.in_channels, cfg.image_size, cfg.image_size)
    z = samplers.sample(sampler, model, schedule, shape, steps, tokens.to(schedule.device), guidance_scale,
                        generator=generator, batch_size=batch_size)
    return decode_latents(autoencoder, z)


@lru_cache(maxsize=4)
def _shipped(device: str) -> tuple[nn.Module, object, nn.Module, float]:
    from .pretrained import load_autoencoder, load_diffusion, manifest
    model, schedule, _ = load_diffusion("shapes_ldm", device)
    scale = manifest()["shapes_ldm"]["metrics"].get("guidance_scale", DEFAULT_GUIDANCE)
    return model, schedule, load_autoencoder("shapes_vae", device), scale


def text_to_image(prompts: Sequence[str], steps: int = 20, guidance_scale: Optional[float] = None,
                  generator: Optional[torch.Generator] = None, device: Optional[Device] = None) -> Tensor:
    """Images (N, 3, 64, 64) in [-1, 1] of the captions ``prompts``, from the shipped ``shapes_ldm`` (a
    text-conditional U-Net on 4×16×16 latents) and ``shapes_vae`` (its decoder): DPM-Solver++ with
    ``steps`` network calls, classifier-free guidance at ``guidance_scale`` (None: the scale measured
    best for the shipped model, in its manifest entry). ``device``: the generator's, else "cpu".

    Prompts use the Scenes grammar: "a large red circle at the top left", "a blue square and a small
    yellow cross"; a word outside it is a ValueError that lists the words there are."""
    if isinstance(prompts, str):
        raise TypeError(f"prompts must be a list of captions; got the single string {prompts!r} (wrap it: [{prompts!r}])")
    if not prompts:
        raise ValueError("prompts must hold at least one caption; got none")
    device = torch.device(device if device is not None else generator.device if generator is not None else "cpu")
    model, schedule, autoencoder, default_scale = _shipped(str(device))
    tokens = caption_tokenizer(model.config.max_tokens).encode(list(prompts))
    scale = default_scale if guidance_scale is None else guidance_scale
    return sample_images(model, schedule, autoencoder, tokens, steps, scale, generator=generator)
