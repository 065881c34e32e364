"""Notebook 05's exercises: the ε-prediction training loss, the EMA update of the weights, the min-SNR-weighted loss."""
from __future__ import annotations

import copy
import random
from typing import Callable

import torch
from torch import Tensor

from ... import losses, schedules
from .core import (
    _ABAR,
    _ALPHA,
    IMAGE_TOLERANCE,
    Case,
    Exercise,
    ExerciseError,
    Mistake,
    _advice,
    _first_hint,
    check,
    describe,
    hidden_rng,
    register,
    t_labels,
    torch_seed,
)

__all__ = ["HINT_EMA_UPDATE", "HINT_MIN_SNR_LOSS", "HINT_TRAINING_LOSS", "check_ema_update", "check_min_snr_loss",
           "check_training_loss"]   # what mc.exercises exports from here


HINT_TRAINING_LOSS = ("x_t = md.q_sample(x0, t, s, noise) = √ᾱ·x0 + √(1 − ᾱ)·noise with ᾱ = s.alphas_cumprod[t], "
                      "the ᾱ of step t + 1 (t holds positions, like every minidiff t); the network sees x_t "
                      "and t — not x0 — and predicts the noise: return ((model(x_t, t) − noise)²).mean(), "
                      "a mean over every pixel of the batch (not a sum, and not against x0).")


class _TinyDenoiser(torch.nn.Module):
    """A small deterministic stand-in for a U-Net: a conv whose output depends on x_t and on t."""

    description = "a small stand-in for a U-Net (one convolution; its output depends on x_t and t)"

    def __init__(self, channels: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.conv(x) * (1 + t.float().view(-1, 1, 1, 1) / 1000)


def _hidden_loss_settings(rng: random.Random) -> list[tuple]:
    """Drawn (image shape, t, schedule): a batch with both ends of T, each twice, and a single image."""
    kind = lambda: rng.choice(("linear", "cosine", "sigmoid"))
    t = [0, 0, 999, 999, rng.randint(1, 998)]
    rng.shuffle(t)
    return [((5, 1, 4, 4), t, kind()), ((1, rng.randint(1, 3), 8, 8), [rng.randint(0, 999)], kind())]


def check_training_loss(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(model, x0, t, noise, s) -> scalar`` against ``minidiff.diffusion_loss`` with the same t and ε."""
    rng = hidden_rng("training_loss") if hidden else None
    settings = (_hidden_loss_settings(rng) if rng else
                [((4, 1, 8, 8), [0, 10, 500, 999], "linear"), ((3, 3, 6, 6), [999, 1, 250], "cosine")])
    cases = []
    with torch.random.fork_rng(devices=[]):            # seeded models without touching the notebook's RNG
        for seed, (shape, t, kind) in enumerate(settings, start=torch_seed(rng) if rng else 0):
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
                   "written into p_ema itself (p_ema.mul_(decay).add_(p, alpha=1 − decay), "
                   "or p_ema.lerp_(p, 1 − decay)), "
                   "inside torch.no_grad(). decay multiplies the old average, 1 − decay the new weights. Buffers "
                   "(zip(ema_model.buffers(), model.buffers())) are copied, not averaged: b_ema.copy_(b). "
                   "Change ema_model only; model stays as it is.")


class _TinyNet(torch.nn.Module):
    """A small stand-in for a U-Net: two layers of parameters and a float buffer (like BatchNorm's running mean)."""

    description = "a small stand-in for a U-Net (two layers and a float buffer)"

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
    rng = hidden_rng("ema_update") if hidden else None          # hidden: two drawn (channels, decay)
    settings = ([(rng.randint(1, 3), round(rng.uniform(0.5, 0.95), 3)) for _ in range(2)] if rng else
                [(1, 0.99), (2, 0.9), (3, 0.0), (2, 1.0)])
    notes = {0.0: " (decay 0: the average becomes θ)", 1.0: " (decay 1: the average stays as it was)"}
    cases = []
    for seed, (channels, decay) in enumerate(settings, start=torch_seed(rng) if rng else 0):
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
        EMA_UPDATE_MISTAKES, ("minidiff.train.ema_update",), changes_inputs=True),
)


# -- the min-SNR-weighted loss (Hang et al. 2023) ------------------------------------------------
HINT_MIN_SNR_LOSS = ("t holds positions: image b is noised to step t[b] + 1, whose ᾱ is s.alphas_cumprod[t[b]]. "
                     "x_t = md.q_sample(x0, t, s, noise); error_b = the mean over image b's pixels of "
                     "(model(x_t, t) − noise)², shape (B,); SNR_b = ᾱ/(1 − ᾱ) (s.snr(t) gives it), cast to the "
                     "error's dtype; w_b = min(SNR_b, γ)/SNR_b, written as min(1, γ/SNR_b) so that SNR = 0 gives 1, "
                     "not 0/0; return the mean over the batch of w_b · error_b.")


def _reference_min_snr_loss(model: Callable, x0: Tensor, t: Tensor, noise: Tensor, s: schedules.NoiseSchedule,
                            gamma: float = 5.0) -> Tensor:
    r"""$\frac1B\sum_b \min(1, \gamma/\mathrm{SNR}(t_b))\,\mathrm{mean}\big((\varepsilon_\theta(x_{t_b}, t_b)
    - \varepsilon_b)^2\big)$, from minidiff's own pieces: with γ = 5 it is
    ``diffusion_loss(model, x0, s, weighting="min_snr", t=t, noise=noise)``."""
    error = losses.per_sample_loss(model, x0, t, s, noise=noise)    # (B,): ε-target, unweighted
    return (losses.loss_weight("min_snr", "eps", s.snr(t).to(error.dtype), gamma) * error).mean()


def _ends_and(rng: random.Random, num_steps: int, count: int) -> list[int]:
    """``count`` distinct positions of a schedule of ``num_steps``, both ends among them, in a drawn order."""
    t = [0, num_steps - 1, *rng.sample(range(1, num_steps - 1), count - 2)]
    rng.shuffle(t)
    return t


def _hidden_min_snr_settings(rng: random.Random, linear: schedules.NoiseSchedule,
                             cosine: schedules.NoiseSchedule) -> list[tuple]:
    """Drawn: a short sigmoid schedule with γ = 1, a zero-terminal-SNR one at its last step, one image, and a
    batch over T = 1000 with a large γ."""
    short = rng.randint(30, 60)
    return [((5, 1, 4, 4), _ends_and(rng, short, 5), schedules.make_schedule("sigmoid", short), 1.0, ""),
            ((2, 3, 4, 4), [999, rng.randint(0, 10)], cosine.rescaled_zero_terminal_snr(), 5.0,
             " (SNR = 0 at t = 999)"),
            ((1, 1, 7, 7), [rng.randint(0, 5)], linear, 5.0, " (one image)"),
            ((6, 1, 3, 3), _ends_and(rng, 1000, 6), linear, rng.choice((10.0, 20.0)), "")]


def _min_snr_cases(hidden: bool) -> list[Case]:
    linear, cosine = schedules.NoiseSchedule.linear(1000), schedules.NoiseSchedule.cosine(1000)
    # (image shape, positions t, schedule, γ, what the case is for)
    rng = hidden_rng("min_snr_cases") if hidden else None
    settings = (_hidden_min_snr_settings(rng, linear, cosine) if rng else
                [((4, 1, 8, 8), [0, 1, 10, 60], linear, 5.0, " (nearly clean steps: SNR > γ, weights below 1)"),
                 ((4, 1, 6, 6), [999, 600, 300, 0], linear, 5.0, " (SNR < γ, weight 1, except at t = 0)"),
                 ((3, 2, 5, 5), [5, 400, 999], cosine, 5.0, ""),
                 ((3, 1, 4, 4), [999, 998, 0], linear.rescaled_zero_terminal_snr(), 5.0,
                  " (zero terminal SNR: SNR = 0 at t = 999, where the weight is 1)"),
                 ((2, 1, 5, 5), [30, 90], linear, 2.0, " (another γ)")])
    cases = []
    with torch.random.fork_rng(devices=[]):            # seeded models without touching the notebook's RNG
        for seed, (shape, t, s, gamma, note) in enumerate(settings, start=torch_seed(rng) if rng else 0):
            torch.manual_seed(seed)
            inputs = dict(model=_TinyDenoiser(shape[1]), x0=torch.randn(shape), t=torch.tensor(t),
                          noise=torch.randn(shape), s=s, gamma=gamma)
            cases.append(Case(describe(**inputs) + note, tuple(inputs.values()),
                              batch_labels=t_labels(inputs["t"], shape[0])))
    return cases


def check_min_snr_loss(fn: Callable, hidden: bool = False) -> Callable:
    r"""Check ``fn(model, x0, t, noise, s, gamma=5.0) -> scalar``, the ε-loss with min-SNR-γ weights
    $\min(1, \gamma/\mathrm{SNR})$ per image, against minidiff's ``per_sample_loss`` and ``loss_weight``."""
    return check("min_snr_loss", fn, _reference_min_snr_loss, _min_snr_cases(hidden), _first_hint("min_snr_loss"),
                 **IMAGE_TOLERANCE, hidden=hidden)


def _min_snr(snr: Tensor, gamma: float) -> Tensor:
    """The right weight, min(1, γ/SNR) on the ε scale, written out (as ``losses.loss_weight`` computes it): the
    mistakes built on it must not call minidiff's own, which the check refuses inside a learner's function."""
    return (gamma / snr).clamp(max=1.0)


def _min_snr_with(weight: Callable = _min_snr, shift: int = 0, snr_is_abar: bool = False, pixels: str = "mean",
                  batch: str = "mean", weight_after_mean: bool = False) -> Callable:
    """A wrong min-SNR loss: another ``weight(snr, γ)``, the SNR of position t + ``shift`` (or ᾱ taken for it),
    errors summed over pixels or over the batch, or the weights averaged apart from the errors."""
    def wrong(model: Callable, x0: Tensor, t: Tensor, noise: Tensor, s: schedules.NoiseSchedule,
              gamma: float = 5.0) -> Tensor:
        abar = _ABAR(s, t, x0)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        error = (model(x_t, t) - noise).pow(2).flatten(1)
        error = error.mean(1) if pixels == "mean" else error.sum(1)
        a = s.alphas_cumprod[t + shift]
        w = weight((a if snr_is_abar else a / (1 - a)).to(error.dtype), gamma)
        if weight_after_mean:
            return w.mean() * error.mean()
        return (w * error).mean() if batch == "mean" else (w * error).sum()
    return wrong


MIN_SNR_LOSS_MISTAKES = (
    Mistake("the weight is min(SNR, γ), which is min-SNR's weight for an x0-target; on the ε scale divide it by SNR: "
            "min(SNR, γ)/SNR = min(1, γ/SNR)", _min_snr_with(weight=lambda snr, g: snr.clamp(max=g))),
    Mistake("the weight is γ/SNR without the clamp: where SNR < γ it exceeds 1; min-SNR keeps those steps at "
            "weight 1 (min(1, γ/SNR))", _min_snr_with(weight=lambda snr, g: g / snr)),
    Mistake("max instead of min: the weight is min(SNR, γ)/SNR = min(1, γ/SNR), never above 1",
            _min_snr_with(weight=lambda snr, g: (g / snr).clamp(min=1.0))),
    Mistake("the weight was applied after averaging over the batch (mean of the weights times mean of the errors); "
            "multiply each image's error by its own weight, then take the batch mean",
            _min_snr_with(weight_after_mean=True)),
    Mistake("the SNR is that of position t + 1 (step t + 2); image b was noised to step t[b] + 1, whose SNR is at "
            "position t[b]: s.alphas_cumprod[t], or s.snr(t)", _min_snr_with(shift=1)),
    Mistake("the SNR is that of position t − 1 (step t); image b was noised to step t[b] + 1, whose SNR is at "
            "position t[b]: s.alphas_cumprod[t], or s.snr(t)", _min_snr_with(shift=-1)),
    Mistake("ᾱ was taken for the SNR; SNR = ᾱ/(1 − ᾱ) (with ᾱ ≤ 1 < γ every weight came out 1: the plain loss)",
            _min_snr_with(snr_is_abar=True)),
    Mistake("each image's squared errors were summed over its pixels; the per-image error is their mean",
            _min_snr_with(pixels="sum")),
    Mistake("the weighted errors were summed over the batch; the loss is their mean", _min_snr_with(batch="sum")),
    Mistake("min(SNR, γ)/SNR is 0/0 = NaN where SNR = 0 (the last position of a zero-terminal-SNR schedule); "
            "write the weight as min(1, γ/SNR), which is 1 there",
            _min_snr_with(weight=lambda snr, g: snr.clamp(max=g) / snr)),
)


register(
    Exercise("min_snr_loss", "min_snr_loss", _reference_min_snr_loss, (
        "The training loss of the first exercise, with one error per image instead of one for the batch: give each "
        "image a weight from how clean its x_t is (its signal-to-noise ratio), 1 for noisy steps and less for nearly "
        "clean ones, never more than 1, and average the weighted errors over the batch.",
        HINT_MIN_SNR_LOSS,
        "x_t = md.q_sample(x0, t, s, noise); error = (model(x_t, t) − noise).pow(2).flatten(1).mean(1); "
        "snr = s.snr(t).to(error.dtype); then the mean of (gamma / snr).clamp(max=1.0) * error."),
        MIN_SNR_LOSS_MISTAKES, ("minidiff.losses.per_sample_loss", "minidiff.losses.diffusion_loss",
                                "minidiff.losses.loss_weight"),
        per_image_t=True),
)
