"""Notebook 01's exercises: one step of the forward process, x_t ~ q(x_t | x_{t−1}), and the whole chain
run step by step, recording x_t after chosen numbers of steps."""
from __future__ import annotations

import random
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from ... import diffusion, schedules
from .core import (
    _ABAR,
    _ALPHA,
    _BETA,
    IMAGE_TOLERANCE,
    Case,
    Exercise,
    Mistake,
    _at,
    _first_hint,
    _flat,
    check,
    describe,
    hidden_rng,
    image_cases,
    register,
    torch_seed,
)

__all__ = ["HINT_FORWARD_CHAIN", "HINT_Q_STEP", "check_forward_chain", "check_q_step"]   # what mc.exercises exports


HINT_Q_STEP = ("t is a position: it holds step t + 1. x = √α·x_prev + √β·noise with β = s.betas[t] (the β of step"
               " t + 1) and α = 1 − β = s.alphas[t], that one step's own α, not ᾱ = s.alphas_cumprod[t]. Use the"
               " noise you are given; for t of shape (B,) each image needs its own coefficient:"
               " md.extract(s.betas, t, x_prev) gives β shaped (B, 1, 1, 1), in x_prev's dtype.")


def check_q_step(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(x_prev, t, s, noise) -> x_t``, one forward step, against ``minidiff.q_step``."""
    cases = image_cases(("x_prev", "t", "schedule", "noise"), hidden)
    return check("q_step", fn, diffusion.q_step, cases, _first_hint("q_step"), **IMAGE_TOLERANCE, hidden=hidden)


def _q_step_with(alpha: Callable, beta: Callable, swap: bool = False, roots: bool = True) -> Callable:
    def wrong(x_prev: Tensor, t: Any, s: schedules.NoiseSchedule, noise: Tensor) -> Tensor:
        a, b = alpha(s, t, x_prev), beta(s, t, x_prev)
        a, b = (a.sqrt(), b.sqrt()) if roots else (a, b)
        return b * x_prev + a * noise if swap else a * x_prev + b * noise
    return wrong


def _at_roots(x_root: bool, noise_root: bool) -> Callable:
    """One step with √ taken of α only where ``x_root`` and of β only where ``noise_root``."""
    def wrong(x_prev: Tensor, t: Any, s: schedules.NoiseSchedule, noise: Tensor) -> Tensor:
        a, b = _ALPHA(s, t, x_prev), _BETA(s, t, x_prev)
        return (a.sqrt() if x_root else a) * x_prev + (b.sqrt() if noise_root else b) * noise
    return wrong


def _no_shrink(x_prev: Tensor, t: Any, s: schedules.NoiseSchedule, noise: Tensor) -> Tensor:
    return x_prev + _BETA(s, t, x_prev).sqrt() * noise


Q_STEP_MISTAKES = (
    Mistake("you used s.alphas_cumprod[t] (ᾱ, the whole way from x_0) where one step needs its own α = s.alphas[t]",
            _q_step_with(_ABAR, _BETA)),
    Mistake("you wrote the closed-form jump from x_0 (ᾱ and 1 − ᾱ); one step uses its own α = s.alphas[t] and "
            "β = s.betas[t]", _q_step_with(_ABAR, lambda s, t, x: 1 - _at(s.alphas_cumprod, t, x))),
    Mistake("the square roots are missing: the coefficients are √α and √β", _q_step_with(_ALPHA, _BETA, roots=False)),
    Mistake("the coefficients are swapped: x_prev takes √α and the noise √β", _q_step_with(_ALPHA, _BETA, swap=True)),
    Mistake("the noise was scaled by β, a variance: the noise's standard deviation is √β, so add √β·noise "
            "(s.betas[t].sqrt())", _at_roots(x_root=True, noise_root=False)),
    Mistake("x_prev was scaled by 1 − β = α, not by √(1 − β) = √α: the shrink keeps the variance at 1 only with "
            "the square root", _at_roots(x_root=False, noise_root=True)),
    Mistake("the shrink is missing: x_prev + √β·noise lets the variance grow by β at every step; x_prev takes "
            "√(1 − β) = √α", _no_shrink),
    Mistake("you indexed at t − 1: t is already a position (it holds step t + 1), so its β is s.betas[t]",
            _q_step_with(lambda s, t, x: _at(s.alphas, t - 1, x), lambda s, t, x: _at(s.betas, t - 1, x))),
    Mistake("the coefficient was not shaped per image: s.betas[t] has shape (B,) and lines up with the images' "
            "columns; md.extract(s.betas, t, x_prev) gives it shape (B, 1, 1, 1)",
            _q_step_with(lambda s, t, x: _flat(s.alphas, t, x), lambda s, t, x: _flat(s.betas, t, x))),
)


# -- the chain, step by step ------------------------------------------------------------------------
HINT_FORWARD_CHAIN = ("Start from x = x0 (that is t = 0). For each position i = 0, 1, …, T − 1 take one step,"
                      " x = q_step(x, i, s, noise[i]): it turns x_i into x_{i+1}, the image after i + 1 steps. Keep"
                      " x whenever its number of steps is in `steps` (x0 itself for 0), then return"
                      " torch.stack([kept[k] for k in steps]), in the order of `steps`.")


def check_forward_chain(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(x0, s, steps, noise) -> (len(steps), *x0.shape)``, the chain recorded after ``steps[j]``
    steps, against ``minidiff.q_chain``."""
    return check("forward_chain", fn, diffusion.q_chain, _chain_cases(hidden), _first_hint("forward_chain"),
                 **IMAGE_TOLERANCE, hidden=hidden)


_OFF_BY_ONE = ("an off-by-one between steps and positions: the step at position i (i = 0 … T − 1, using noise[i]) "
               "turns x_i into x_{i+1}, so keep its result under k = i + 1, x0 itself under k = 0, and every k "
               "from 0 to T is there to look up")


def _chain_error_advice(exc: Exception, args: tuple) -> Optional[str]:
    """A KeyError for a step count (0 … T) or an IndexError inside forward_chain: the off-by-one mistake."""
    s = args[1]
    if isinstance(exc, KeyError) and exc.args[:1] not in [(k,) for k in range(s.num_steps + 1)]:
        return None                                 # not a step count looked up where nothing was stored
    return _OFF_BY_ONE if isinstance(exc, (KeyError, IndexError)) else None



# (image shape, schedule, steps): x_0 and the last step, unsorted and repeated steps, one step only. The
# first case stops short of T, so a chain that keeps each image one step late fails there on its values.
_CHAIN_CASES = [
    ((2, 1, 4, 4), ("linear", 10), [0, 1, 5]),
    ((3, 1, 5, 5), ("cosine", 20), [20, 3, 7]),
    ((1, 3, 4, 4), ("linear", 1000), [0, 1, 2, 500, 1000]),
    ((2, 2, 3, 3), ("sigmoid", 50), [50]),
    ((4, 1, 2, 2), ("linear", 10), [1, 10]),
]


def _hidden_chain_settings(rng: random.Random) -> list[tuple]:
    """Four drawn chains: the last steps of T = 1000 with x_0 among them, every step count of a short schedule
    in reverse, the shortest schedule (T = 2) with a step repeated, and one step count midway."""
    kind = lambda: rng.choice(("linear", "cosine", "sigmoid"))
    short, last = rng.randint(5, 9), [rng.randint(990, 999), 1000, 0]
    rng.shuffle(last)
    return [((2, 1, 3, 3), (kind(), 1000), last),
            ((1, 1, 2, 2), (kind(), short), list(range(short, -1, -1))),
            ((3, 1, 2, 2), (kind(), 2), [1, 2, 1]),
            ((4, 2, 2, 2), (kind(), 30), [rng.randint(2, 28)])]


def _chain_cases(hidden: bool = False) -> list[Case]:
    rng = hidden_rng("chain_cases") if hidden else None
    settings, first_seed = (_hidden_chain_settings(rng), torch_seed(rng)) if rng else (_CHAIN_CASES, 20)
    cases = []
    for seed, (shape, (kind, num_steps), steps) in enumerate(settings, start=first_seed):
        generator = torch.Generator().manual_seed(seed)
        x0 = torch.randn(shape, generator=generator)
        noise = torch.randn((num_steps, *shape), generator=generator)
        s = schedules.make_schedule(kind, num_steps)
        cases.append(Case(describe(x0=x0, schedule=s, steps=steps, noise=noise), (x0, s, steps, noise),
                          batch_labels=tuple(f"the image after {k} steps" for k in steps)))
    return cases


def _chain_with(record: Callable[[int], int] = lambda k: k, noise_at: Callable[[int], int] = lambda i: i,
                jump: bool = False, alias: bool = False) -> Callable:
    """The chain with one thing wrong: entry k holds x after ``record(k)`` steps; step i uses
    ``noise[noise_at(i)]``; ``jump``: the closed form instead of the chain; ``alias``: every entry the last x."""
    def wrong(x0: Tensor, s: schedules.NoiseSchedule, steps: Sequence[int], noise: Tensor) -> Tensor:
        if jump:
            return torch.stack([x0 if k == 0 else diffusion.q_sample(x0, k - 1, s, noise[k - 1]) for k in steps])
        wanted = [record(k) for k in steps]
        if min(wanted) < 0 or max(wanted) > s.num_steps:
            raise IndexError("no such step")
        kept, x = {0: x0}, x0
        for i in range(max(wanted)):
            x = diffusion.q_step(x, i, s, noise[noise_at(i)])
            kept[i + 1] = x
        return torch.stack([x if alias else kept[k] for k in wanted])
    return wrong


FORWARD_CHAIN_MISTAKES = (
    Mistake("each image is one step too far: after the step at position i, x is x_{i+1}, the image after i + 1 "
            "steps, so keep it for k = i + 1 (and x0 itself for k = 0)", _chain_with(record=lambda k: k + 1)),
    Mistake("each image is one step short: the image for k is the one after k steps, i.e. after the step at "
            "position k − 1 (x0 itself only for k = 0)", _chain_with(record=lambda k: max(k - 1, 0))),
    Mistake("you used noise[0] at every step; each step adds its own fresh ε: noise[i] at position i",
            _chain_with(noise_at=lambda i: 0)),
    Mistake("you jumped with the closed form q(x_t | x_0) (notebook 02); this exercise runs the chain one "
            "q_step at a time, each with its own noise[i]", _chain_with(jump=True)),
    Mistake("every kept image is the last one: you kept x and then changed it in place; make a new tensor each "
            "step (x = q_step(...)) or keep x.clone()", _chain_with(alias=True)),
)


register(
    Exercise("q_step", "q_step", diffusion.q_step, (
        "One forward step keeps most of the previous image and adds a little of the noise you are given; both "
        "amounts come from that one step's β (not a product over steps), as square roots so that variances add up.",
        HINT_Q_STEP,
        "beta = md.extract(s.betas, t, x_prev); then (1 − beta).sqrt() multiplies x_prev and beta.sqrt() "
        "multiplies noise."),
        Q_STEP_MISTAKES, ("minidiff.diffusion.q_step",), per_image_t=True),
    Exercise("forward_chain", "forward_chain", diffusion.q_chain, (
        "Apply one forward step after another, each with its own slice of noise, and keep a copy of the image "
        "whenever the number of steps taken so far is one you were asked for: the label t = k means 'after k "
        "steps', and the step at position i is step i + 1.",
        HINT_FORWARD_CHAIN,
        "kept, x = {0: x0}, x0; for i in range(s.num_steps): x = q_step(x, i, s, noise[i]); kept[i + 1] = x; "
        "then return torch.stack([kept[k] for k in steps])."),
        FORWARD_CHAIN_MISTAKES, ("minidiff.diffusion.q_chain",), depends_on=("q_step",),
        error_advice=_chain_error_advice),
)
