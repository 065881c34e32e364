"""Notebook 05's exercises: the ε-prediction training loss and the EMA update of the weights."""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import Tensor

from ... import schedules
from .core import (_ABAR, _ALPHA, IMAGE_TOLERANCE, Case, Exercise, ExerciseError, Mistake, _advice, _first_hint, check,
                   describe, register)

__all__ = ["HINT_EMA_UPDATE", "HINT_TRAINING_LOSS", "check_ema_update", "check_training_loss"]   # what md.exercises exports from here


HINT_TRAINING_LOSS = ("x_t = md.q_sample(x0, t, s, noise) = √ᾱ·x0 + √(1 − ᾱ)·noise with ᾱ = s.alphas_cumprod[t], "
                      "the ᾱ of step t + 1 (t holds positions, like every minidiff t); the network sees x_t "
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
    Mistake("x_t was made with s.alphas[t] (the one-step α) instead of s.alphas_cumprod[t] (the ᾱ of step t + 1; "
            "md.q_sample does it right)",
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


# -- the EMA update ---------------------------------------------------------------------------------
HINT_EMA_UPDATE = ("For every pair of parameters (p_ema, p) of ema_model and model, in the same order "
                   "(zip(ema_model.parameters(), model.parameters())): p_ema ← decay·p_ema + (1 − decay)·p, "
                   "written into p_ema itself (p_ema.mul_(decay).add_(p, alpha=1 − decay), or p_ema.lerp_(p, 1 − decay)), "
                   "inside torch.no_grad(). decay multiplies the old average, 1 − decay the new weights. Buffers "
                   "(zip(ema_model.buffers(), model.buffers())) are copied, not averaged: b_ema.copy_(b). "
                   "Change ema_model only; model stays as it is.")


class _TinyNet(torch.nn.Module):
    """A small stand-in for a U-Net: two layers of parameters and a float buffer (like BatchNorm's running mean)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.out = torch.nn.Linear(channels, 2)
        self.register_buffer("running_mean", torch.zeros(channels))


def _pair(channels: int, seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(ema_model, model): the EMA copy frozen as the Trainer keeps it (requires_grad False), its weights and
    buffer a little away from the model's, so that every wrong mix of the two shows."""
    g = torch.Generator().manual_seed(seed)
    model = _TinyNet(channels)
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.copy_(torch.randn(tensor.shape, generator=g))
    ema_model = copy.deepcopy(model).requires_grad_(False)
    with torch.no_grad():
        for tensor in [*ema_model.parameters(), *ema_model.buffers()]:
            tensor.add_(torch.randn(tensor.shape, generator=g))
    return ema_model, model


def _observe(update: Callable) -> Callable:
    """``update(ema_model, model, decay)`` run for its effect, returned as what the check compares: the EMA's
    parameters, the EMA's buffers and the model's parameters, each flattened into one vector."""
    def observed(ema_model: torch.nn.Module, model: torch.nn.Module, decay: float) -> tuple[Tensor, Tensor, Tensor]:
        update(ema_model, model, decay)
        flat = lambda tensors: torch.cat([t.detach().flatten() for t in tensors])
        return flat(ema_model.parameters()), flat(ema_model.buffers()), flat(model.parameters())
    return observed


def _reference_ema_update(ema_model: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    from ...train import ema_update
    ema_update(ema_model, model, decay)


def check_ema_update(fn: Callable, hidden: bool = False) -> Callable:
    r"""Check ``fn(ema_model, model, decay)``, which updates ema_model in place ($\theta_{ema} \leftarrow
    d\,\theta_{ema} + (1 - d)\,\theta$, buffers copied), against the Trainer's ``ema_update``; and that the
    EMA's parameters carry no autograd graph afterwards (the update ran under ``torch.no_grad()``)."""
    settings = [(2, 0.9), (3, 0.5)] if hidden else [(1, 0.99), (2, 0.9), (3, 0.0), (2, 1.0)]
    notes = {0.0: " (decay 0: the average becomes θ)", 1.0: " (decay 1: the average stays as it was)"}
    cases = []
    for seed, (channels, decay) in enumerate(settings, start=100 if hidden else 0):
        ema_model, model = _pair(channels, seed)
        cases.append(Case(describe(ema_model=ema_model, model=model, decay=decay) + notes.get(decay, ""),
                          (ema_model, model, decay)))

    def observed(ema_model: torch.nn.Module, model: torch.nn.Module, decay: float) -> tuple[Tensor, Tensor, Tensor]:
        result = _observe(fn)(ema_model, model, decay)
        tracked = [name for name, p in ema_model.named_parameters() if p.requires_grad or p.grad_fn is not None]
        if tracked:
            raise ExerciseError(f"ema_update gives the right numbers, but afterwards the EMA's parameters "
                                f"({', '.join(tracked)}) are part of an autograd graph: the update was recorded for "
                                f"backpropagation. Run it inside `with torch.no_grad():` (the average is not trained)."
                                f"\n  Hint: {_first_hint('ema_update')}{_advice('ema_update')}", "ema_update")
        return result
    checked = check("ema_update", observed, _observe(_reference_ema_update), cases, _first_hint("ema_update"),
                    atol=1e-6, rtol=1e-5, output_names=("the EMA's parameters", "the EMA's buffers",
                                                        "the model's parameters (which must not change)"),
                    hidden=hidden, learner=fn)
    if checked is None:                 # the hidden tests passed: they return nothing
        return None
    return fn if checked is observed else _reference_ema_update


def _ema_with(ema_weight: Callable = lambda d: d, update_model: bool = False, buffers: str = "copy",
              in_place: bool = True) -> Callable:
    """A wrong EMA update: ``ema_weight(d)`` on the old average, buffers copied/averaged/left, or the model updated."""
    @torch.no_grad()
    def wrong(ema_model: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
        w = ema_weight(decay)
        target, source = (model, ema_model) if update_model else (ema_model, model)
        for p_target, p_source in zip(target.parameters(), source.parameters()):
            if in_place:
                p_target.mul_(w).add_(p_source, alpha=1 - w)
        for b_target, b_source in zip(target.buffers(), source.buffers()):
            if buffers == "copy":
                b_target.copy_(b_source)
            elif buffers == "average":
                b_target.mul_(w).add_(b_source, alpha=1 - w)
    return wrong


EMA_UPDATE_MISTAKES = (
    Mistake("decay and 1 − decay are swapped: decay multiplies the old average θ_ema, 1 − decay the new weights θ",
            _observe(_ema_with(ema_weight=lambda d: 1 - d))),
    Mistake("the wrong model was updated: model's weights moved towards the average, ema_model stayed; "
            "write into ema_model (θ_ema ← decay·θ_ema + (1 − decay)·θ)", _observe(_ema_with(update_model=True))),
    Mistake("the EMA's weights did not change: `p_ema = decay * p_ema + …` only rebinds a name; write into the "
            "tensor itself (p_ema.mul_(decay).add_(p, alpha=1 − decay), or p_ema.copy_(…))",
            _observe(_ema_with(in_place=False, buffers="none"))),
    Mistake("the buffers were left as they were; they are copied from the model (b_ema.copy_(b))",
            _observe(_ema_with(buffers="none"))),
    Mistake("the buffers were averaged like the parameters; they are copied from the model (b_ema.copy_(b))",
            _observe(_ema_with(buffers="average"))),
    Mistake("the EMA's weights were replaced by the model's (decay was ignored)",
            _observe(_ema_with(ema_weight=lambda d: 0.0))),
)


register(
    Exercise("ema_update", "ema_update", _reference_ema_update, (
        "Move every parameter of the average a small step towards the model's: keep decay of the old average and "
        "add 1 − decay of the new weights, in place and without recording gradients; copy the buffers.",
        HINT_EMA_UPDATE,
        "with torch.no_grad(): for p_ema, p in zip(ema_model.parameters(), model.parameters()): "
        "p_ema.mul_(decay).add_(p, alpha=1 − decay); then for b_ema, b in zip(ema_model.buffers(), "
        "model.buffers()): b_ema.copy_(b)."),
        EMA_UPDATE_MISTAKES, ("minidiff.train.ema_update",)),
)
