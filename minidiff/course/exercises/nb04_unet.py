"""Notebook 04's exercises: the sinusoidal timestep embedding, FiLM time injection, and the receptive field
of a chain of convolutions."""
from __future__ import annotations

import math
import random
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ...nn.blocks import film
from ...nn.embedding import timestep_embedding
from ...nn.unet import receptive_field
from .core import Case, Exercise, Mistake, _first_hint, check, describe, hidden_rng, register, torch_seed

__all__ = ["HINT_EMBEDDING", "HINT_INJECT_TIME", "HINT_RECEPTIVE_FIELD", "check_inject_time", "check_receptive_field",
           "check_timestep_embedding"]   # what mc.exercises exports from here


HINT_EMBEDDING = ("ω_i = max_period^(−i/h) for i = 0 … h−1 with h = dim/2 (torch.exp(−log(max_period)·i/h)); "
                  "angles = t[:, None]·ω[None, :] in float32; return torch.cat([cos(angles), sin(angles)], dim=1) "
                  "— cosines first, shape (B, dim).")

HINT_RECEPTIVE_FIELD = ("Start with r = 1 (one pixel sees itself) and j = 1 (neighbouring positions are 1 input pixel "
                        "apart). For each layer (k, s) in order: r ← r + (k − 1)·j, then j ← j·s; record r after every "
                        "layer and return the records as a LongTensor.")

HINT_INJECT_TIME = ("Apply SiLU to emb, then emb_layer: (B, 2C). The first C columns are the scale γ, the last C "
                    "the shift β (.chunk(2, dim=1)); reshape both to (B, C, 1, 1) and return h·(1 + γ) + β — "
                    "note the 1 +, and that the SiLU comes before the linear layer.")


def _hidden_embedding_settings(rng: random.Random) -> list[tuple]:
    """Drawn (t, dim, keywords): one t and the smallest dims, both ends of T with another max_period, a wide one."""
    ends = [0, 999, rng.randint(1, 998)]
    rng.shuffle(ends)
    return [([rng.randint(0, 999)], 2 * rng.randint(1, 3), {}),
            (ends, 2 * rng.randint(8, 24), {"max_period": rng.choice((500, 1000, 2000))}),
            (sorted(rng.sample(range(1, 50), rng.randint(3, 6))), rng.choice((128, 256)), {})]


def check_timestep_embedding(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(t, dim, max_period=10000) -> (B, dim)`` against ``minidiff.timestep_embedding`` (even dims)."""
    settings = (_hidden_embedding_settings(hidden_rng("timestep_embedding")) if hidden else
                [([0, 1, 2], 2, {}), ([0, 10, 500, 999], 8, {}), ([3, 999], 64, {}),
                 ([0, 250, 999], 128, {}), ([5, 50], 16, {"max_period": 100})])
    cases = [Case(describe(t=torch.tensor(t), dim=d, **kw), (torch.tensor(t), d), kw) for t, d, kw in settings]
    return check("timestep_embedding", fn, timestep_embedding, cases, _first_hint("timestep_embedding"),
                 atol=1e-4, rtol=1e-4, hidden=hidden)


def check_inject_time(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(h, emb, emb_layer) -> h·(1 + γ) + β`` (FiLM) against the U-Net's ``film``."""
    rng = hidden_rng("inject_time") if hidden else None
    settings = ([(rng.randint(2, 5), rng.randint(2, 8), rng.randint(1, 6), rng.randint(3, 12)) for _ in range(2)]
                if rng else [(2, 4, 3, 8), (3, 16, 7, 32), (1, 8, 14, 16)])      # (B, C, H = W, embedding width)
    cases = []
    with torch.random.fork_rng(devices=[]):            # seeded layers without touching the notebook's RNG
        for seed, (b, c, hw, e) in enumerate(settings, start=torch_seed(rng) if rng else 0):
            torch.manual_seed(seed)
            h, emb, layer = torch.randn(b, c, hw, hw), torch.randn(b, e), torch.nn.Linear(e, 2 * c)
            cases.append(Case(describe(h=h, emb=emb) + f", emb_layer=Linear({e}, {2 * c})", (h, emb, layer)))
    return check("inject_time", fn, film, cases, _first_hint("inject_time"), hidden=hidden)


def _embedding_with(sines_first: bool = False, over_dim: bool = False, positive: bool = False,
                    interleaved: bool = False) -> Callable:
    def wrong(t: Tensor, dim: int, max_period: int = 10000) -> Tensor:
        half = dim // 2
        exponent = torch.arange(half, dtype=torch.float32) / (dim if over_dim else half)
        freqs = torch.exp((1 if positive else -1) * math.log(max_period) * exponent)
        angles = t.float()[:, None] * freqs[None, :]
        parts = [angles.sin(), angles.cos()] if sines_first else [angles.cos(), angles.sin()]
        return torch.stack(parts, dim=2).flatten(1) if interleaved else torch.cat(parts, dim=1)
    return wrong


EMBEDDING_MISTAKES = (
    Mistake("the sines come first: that is DDPM's own order (Ho et al. 2020, whose exponent also divides by h − 1), "
            "as good for a network trained with it, but this course follows ADM (Dhariwal & Nichol 2021) and "
            "puts the cosines first, as the shipped checkpoints expect: torch.cat([cos, sin], dim=1)",
            _embedding_with(sines_first=True)),
    Mistake("the exponent divides by dim; it is i/h with h = dim/2", _embedding_with(over_dim=True)),
    Mistake("the exponent lacks its minus sign: ω_i = max_period^(−i/h) falls with i", _embedding_with(positive=True)),
    Mistake("cos and sin are interleaved; put all the cosines first, then all the sines",
            _embedding_with(interleaved=True)),
)


def _film_with(silu: str = "before", one_plus: bool = True, swap: bool = False) -> Callable:
    def wrong(h: Tensor, emb: Tensor, emb_layer: torch.nn.Linear) -> Tensor:
        out = emb_layer(F.silu(emb) if silu == "before" else emb)
        out = F.silu(out) if silu == "after" else out
        scale, shift = out.chunk(2, dim=1)
        scale, shift = (shift, scale) if swap else (scale, shift)
        return h * ((1 + scale) if one_plus else scale)[:, :, None, None] + shift[:, :, None, None]
    return wrong


INJECT_TIME_MISTAKES = (
    Mistake("the SiLU is missing: emb_layer(F.silu(emb))", _film_with(silu="none")),
    Mistake("the SiLU comes after emb_layer; it goes before it: emb_layer(F.silu(emb))", _film_with(silu="after")),
    Mistake("h·γ + β: the scale is 1 + γ, so that a zero layer leaves h unchanged", _film_with(one_plus=False)),
    Mistake("scale and shift are swapped: the first C columns are the scale γ", _film_with(swap=True)),
)


register(
    Exercise("timestep_embedding", "timestep_embedding", timestep_embedding, (
        "Turn each integer t into dim numbers: the cosines and the sines of t times frequencies spaced "
        "geometrically from 1 down to max_period^(−(h−1)/h), just above 1/max_period, so that nearby t get similar "
        "vectors at every scale.",
        HINT_EMBEDDING,
        "half = dim // 2; freqs = torch.exp(−math.log(max_period) * torch.arange(half, dtype=torch.float32) / "
        "half); angles = t.float()[:, None] * freqs[None, :]; then cat the cosines and the sines along dim 1."),
        EMBEDDING_MISTAKES, ("minidiff.nn.embedding.timestep_embedding",)),
    Exercise("inject_time", "inject_time", film, (
        "FiLM: a linear layer turns the SiLU-activated time embedding into a scale and a shift per channel; "
        "scale h around 1 (so a zero layer leaves h as it is) and add the shift.",
        HINT_INJECT_TIME,
        "scale, shift = emb_layer(F.silu(emb)).chunk(2, dim=1); index both with [:, :, None, None] and combine "
        "them with h as h·(1 + scale) + shift."),
        INJECT_TIME_MISTAKES, ("minidiff.nn.blocks.film",)),
)


# -- the receptive field of a chain of convolutions ------------------------------------------------
_RECEPTIVE_FIELD_LAYERS = [
    [(3, 1)] * 4,                                           # four 3×3 convolutions: 3, 5, 7, 9
    [(3, 1), (3, 2), (3, 1), (3, 2), (3, 1)],               # two stride-2 downsamplings in between
    [(5, 1), (2, 2), (3, 1)],
    [(7, 2), (3, 2), (3, 1), (1, 1)],
    [(3, 2)] * 5,
]


def _hidden_receptive_field_layers(rng: random.Random) -> list[list[tuple[int, int]]]:
    """Drawn chains: a 1×1 convolution alone, a patchify layer (kernel = stride) then a 3×3, a longer mixed chain."""
    k = rng.randint(2, 5)
    mixed = [(rng.choice((1, 2, 3, 5)), rng.choice((1, 1, 2))) for _ in range(rng.randint(5, 7))]
    return [[(1, 1)], [(k, k), (3, 1)], mixed]


def check_receptive_field(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(layers) -> LongTensor of the receptive field after each layer`` against
    ``minidiff.nn.receptive_field``; ``layers`` is a list of (kernel_size, stride)."""
    settings = _hidden_receptive_field_layers(hidden_rng("receptive_field")) if hidden else _RECEPTIVE_FIELD_LAYERS
    cases = [Case(f"layers={layers}", (list(layers),)) for layers in settings]
    return check("receptive_field", fn, receptive_field, cases, _first_hint("receptive_field"), atol=0, rtol=0,
                 hidden=hidden)


def _field_with(stride: bool = True, jump_first: bool = False, grow: str = "k-1", start: int = 1,
                last_only: bool = False) -> Callable:
    def wrong(layers: list) -> Tensor:
        r, j, fields = start, 1, []
        for k, s in layers:
            if jump_first and stride:
                j = j * s
            r = r + ((k - 1) if grow == "k-1" else k) * j
            if not jump_first and stride:
                j = j * s
            fields.append(r)
        return torch.tensor(fields[-1:] if last_only else fields, dtype=torch.long)
    return wrong


RECEPTIVE_FIELD_MISTAKES = (
    Mistake("the strides were ignored: after a stride-s layer, neighbouring positions are s times further apart "
            "in the input (j ← j·s)", _field_with(stride=False)),
    Mistake("j was multiplied by the layer's stride before r grew: a layer's own stride only spreads the layers "
            "after it (r ← r + (k − 1)·j first, then j ← j·s)", _field_with(jump_first=True)),
    Mistake("a k×k kernel widens the field by k − 1 positions, not k", _field_with(grow="k")),
    Mistake("r starts at 1 (one pixel, before any layer), not 0", _field_with(start=0)),
    Mistake("only the last layer's field was returned; record r after every layer", _field_with(last_only=True)),
)


register(
    Exercise("receptive_field", "receptive_field", receptive_field, (
        "Walk through the layers in order, keeping two numbers: how wide a window of the input one position of "
        "the current feature map sees, and how many input pixels apart two neighbouring positions of that map are.",
        HINT_RECEPTIVE_FIELD,
        "r, j, fields = 1, 1, []; for k, s in layers: r = r + (k − 1) * j; j = j * s; fields.append(r); then "
        "torch.tensor(fields)."),
        RECEPTIVE_FIELD_MISTAKES, ("minidiff.nn.unet.receptive_field",)),
)
