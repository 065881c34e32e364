"""Notebook 05's exercise: the ε-prediction training loss."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ... import schedules
from .core import (_ABAR, _ALPHA, IMAGE_TOLERANCE, Case, Exercise, Mistake, _first_hint, check, describe, register)

__all__ = ["HINT_TRAINING_LOSS", "check_training_loss"]   # what md.exercises exports from here


HINT_TRAINING_LOSS = ("x_t = md.q_sample(x0, t, s, noise) (√ᾱ_t·x0 + √(1 − ᾱ_t)·noise); the network sees x_t "
                      "and t — not x0 — and predicts the noise: return ((model(x_t, t) − noise)²).mean(), "
                      "a mean over every pixel of the batch (not a sum, and not against x0).")


class _TinyDenoiser(torch.nn.Module):
    """A small deterministic stand-in for a U-Net: a conv whose output depends on x_t and on t."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.conv(x) * (1 + t.float().view(-1, 1, 1, 1) / 1000)


def check_training_loss(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(model, x0, t, noise, s) -> scalar`` against ``minidiff.diffusion_loss`` with the same t and ε."""
    settings = ([((5, 1, 4, 4), [0, 0, 999, 999, 500], "sigmoid"), ((1, 2, 8, 8), [123], "linear")] if hidden else
                [((4, 1, 8, 8), [0, 10, 500, 999], "linear"), ((3, 3, 6, 6), [999, 1, 250], "cosine")])
    cases = []
    with torch.random.fork_rng(devices=[]):            # seeded models without touching the notebook's RNG
        for seed, (shape, t, kind) in enumerate(settings, start=100 if hidden else 0):
            torch.manual_seed(seed)
            model, x0, noise = _TinyDenoiser(shape[1]), torch.randn(shape), torch.randn(shape)
            s = schedules.make_schedule(kind, 1000)
            inputs = dict(model=model, x0=x0, t=torch.tensor(t), noise=noise, schedule=s)
            cases.append(Case(describe(**inputs), tuple(inputs.values())))
    return check("training_loss", fn, _reference_training_loss, cases, _first_hint("training_loss"),
                 **IMAGE_TOLERANCE, hidden=hidden)


def _reference_training_loss(model: Callable, x0: Tensor, t: Tensor, noise: Tensor,
                             s: schedules.NoiseSchedule) -> Tensor:
    from ...losses import diffusion_loss
    return diffusion_loss(model, x0, s, t=t, noise=noise)


def _loss_with(sees_x0: bool = False, against_x0: bool = False, reduce: str = "mean", power: int = 2,
               abar: Callable = _ABAR) -> Callable:
    def wrong(model: Callable, x0: Tensor, t: Tensor, noise: Tensor, s: schedules.NoiseSchedule) -> Tensor:
        a = abar(s, t, x0)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        error = (model(x0 if sees_x0 else x_t, t) - (x0 if against_x0 else noise)).abs() ** power
        return error.mean() if reduce == "mean" else error.sum()
    return wrong


TRAINING_LOSS_MISTAKES = (
    Mistake("the model was given x0; it sees the noised x_t (and t)", _loss_with(sees_x0=True)),
    Mistake("the prediction was compared against x0, not against the noise it predicts", _loss_with(against_x0=True)),
    Mistake("the squared errors were summed; the loss is their mean over every pixel of the batch",
            _loss_with(reduce="sum")),
    Mistake("the errors are not squared (that is a mean absolute error)", _loss_with(power=1)),
    Mistake("x_t was made with s.alphas[t] (α_t) instead of ᾱ_t = s.alphas_cumprod[t] (md.q_sample does it right)",
            _loss_with(abar=_ALPHA)),
)


register(
    Exercise("training_loss", "training_loss", _reference_training_loss, (
        "Noise x0 to step t with the noise you are given, let the model look at the noised image and t, and "
        "score how well it recovers that noise with a mean squared error.",
        HINT_TRAINING_LOSS,
        "x_t = md.q_sample(x0, t, s, noise); then the mean of (model(x_t, t) − noise) squared."),
        TRAINING_LOSS_MISTAKES, ("minidiff.losses.diffusion_loss", "minidiff.losses.per_sample_loss"),
        per_image_t=True),
)
