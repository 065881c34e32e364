r"""Notebook 09's exercises: the conditional path and its velocity, the Euler sampler, logit-normal training
times, and the loss on one reflow pair.

The convention is the notebook's (``minidiff.flow``): $x_t = (1 - t)\,x_0 + t\,\varepsilon$, $t \in [0, 1]$, t = 0 the
data and t = 1 the noise; a velocity field is called ``velocity(x, t)`` with t a float tensor of shape (B,), and
returns $u \approx \varepsilon - x_0$. Every t here is a time in [0, 1], not a position in a schedule's tables."""
from __future__ import annotations

import math
import random
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from ... import flow
from .core import (
    Case,
    Exercise,
    Mistake,
    _first_hint,
    check,
    check_properties,
    describe,
    hidden_rng,
    register,
    torch_seed,
)

__all__ = ["HINT_CONDITIONAL_FLOW", "HINT_EULER_SAMPLE", "HINT_LOGIT_NORMAL", "HINT_REFLOW_LOSS",
           "check_conditional_flow", "check_euler_sample", "check_logit_normal",
           "check_reflow_loss"]   # what mc.exercises exports from here


# -- shared: t as the notebook passes it ------------------------------------------------------------
def _per_sample(t: Any, x: Tensor) -> Tensor:
    """A learner's per-sample view of t: shape (B, 1, …) against x (a float stays a 0-dim tensor)."""
    t = torch.as_tensor(t, dtype=x.dtype)
    return t.reshape(-1, *[1] * (x.ndim - 1)) if t.ndim else t


def _times(values: list[float]) -> Tensor:
    return torch.tensor(values, dtype=torch.float32)


def _drawn_times(rng: random.Random, k: int, ends: bool = False) -> list[float]:
    """``k`` times drawn to two decimals in [0.01, 0.99], shuffled; ``ends``: t = 0 and t = 1 among them."""
    times = [rng.randint(1, 99) / 100 for _ in range(k - 2 if ends else k)] + ([0.0, 1.0] if ends else [])
    rng.shuffle(times)
    return times


def _t_text(t: Any) -> str:
    """t for a case's description: ``t=0.7`` or ``t=tensor([0.0, 0.25, 1.0])``."""
    if isinstance(t, Tensor):
        return f"t=tensor([{', '.join(f'{v:.4g}' for v in t.tolist())}])"
    return f"t={t!r}"


def _t_labels(t: Any, batch: int) -> tuple[str, ...]:
    """What each sample of a batch is, for positions in words: ``("t = 0", "t = 0.25", …)``."""
    values = t.tolist() if isinstance(t, Tensor) else [t] * batch
    return tuple(f"t = {v:.4g}" for v in values)


def _require_times(t: Any, x: Tensor, call: str) -> None:
    """The check's fields and models take t as the notebook's models do: a float tensor of shape (B,)."""
    batch = x.shape[0]
    if not isinstance(t, Tensor):
        raise TypeError(f"{call} takes t as a tensor of shape (B,) = ({batch},), one time per sample; got the "
                        f"{type(t).__name__} {t!r}. Make one from a single time: torch.full((len(x),), t)")
    if tuple(t.shape) != (batch,):
        how = (": make one from a single time with torch.full((len(x),), float(t))" if t.ndim == 0 else
               ": pass t itself, not a copy reshaped to mix the samples")
        raise ValueError(f"{call} takes t of shape (B,) = ({batch},), one time per sample; got shape "
                         f"{tuple(t.shape)}{how}")
    if not t.is_floating_point():
        raise TypeError(f"{call} takes t as floating-point times in [0, 1]; got a tensor of {t.dtype}")


def _flat_t_advice(samples: str) -> Callable[[Exception, tuple], Optional[str]]:
    """``Exercise.error_advice`` for a crash that points to t used without its per-sample view (or a float t
    treated as a tensor). The cases end with (…, samples, t): the samples (named ``samples`` in the exercise's
    signature) second to last, t last."""
    def advice(exc: Exception, args: tuple) -> Optional[str]:
        t, x, text = args[-1], args[-2], str(exc)
        if isinstance(t, Tensor) and t.ndim == 1 and isinstance(x, Tensor) and (
                "must match the size" in text or "broadcast" in text):
            shape = ", ".join(["B"] + ["1"] * (x.ndim - 1))
            return (f"t of shape (B,) lines up with the last dimension of the samples, not with the samples: view "
                    f"it as ({shape}) with t.view(-1, *[1] * ({samples}.ndim - 1)), so that each sample gets its "
                    f"own t")
        if isinstance(t, float) and isinstance(exc, AttributeError):
            return (f"t can be a Python float (one time for the whole batch), which has no tensor methods: "
                    f"torch.as_tensor(t, dtype={samples}.dtype).reshape(-1, *[1] * ({samples}.ndim - 1)) handles a "
                    f"float and a tensor of shape (B,) alike")
        return None
    return advice


_FLAT_T = ("t of shape (B,) was not viewed per sample: against samples of shape (B, …, W) with B = W it lines up "
           "with the last dimension (the columns) instead of the samples, silently; view it as (B, 1, …, 1) with "
           "t.view(-1, *[1] * (x.ndim - 1))")


# -- 1. the conditional path and its velocity -------------------------------------------------------
HINT_CONDITIONAL_FLOW = ("x_t = (1 − t)·x0 + t·eps and u = eps − x0: t = 0 is the data, t = 1 the noise, and u is "
                         "dx_t/dt, the velocity from the data towards the noise (not x0 − eps). t holds one time "
                         "per sample, shape (B,): view it as (B, 1) for points or (B, 1, 1, 1) for images so that it "
                         "scales each sample whole; a Python float t needs no view.")


def _conditional_flow_cases(hidden: bool = False) -> list[Case]:
    """(sample shape, t): 2-D points (the notebook's toy) and image batches, the ends t = 0 and t = 1, one float
    t. B differs from the last dimension, so a t of shape (B,) used as it is fails loudly; the hidden cases
    start with B = W, where it broadcasts silently over the columns instead (drawn from the grader's seed)."""
    if hidden:
        rng = hidden_rng("conditional_flow_cases")
        b, n = rng.randint(3, 6), rng.randint(5, 9)
        settings = [((b, 1, rng.randint(3, 6), b), _drawn_times(rng, b, ends=True)), ((n, 2), _drawn_times(rng, n)),
                    ((rng.randint(2, 5), 2), rng.randint(1, 99) / 100),
                    ((2, 3, rng.randint(4, 6), rng.randint(5, 7)), [1.0, rng.randint(1, 99) / 100])]
        first_seed = torch_seed(rng)
    else:
        settings = [((5, 2), [0.0, 0.25, 0.5, 0.9, 1.0]), ((3, 1, 4, 4), [1.0, 0.3, 0.0]),
                    ((6, 2), [0.7, 0.1, 0.45, 0.99, 0.01, 0.6]), ((2, 3, 5, 5), 0.7),
                    ((4, 1, 8, 8), [0.5, 1.0, 0.0, 0.125])]
        first_seed = 0
    cases = []
    for seed, (shape, t) in enumerate(settings, start=first_seed):
        g = torch.Generator().manual_seed(seed)
        x0, eps = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        t = _times(t) if isinstance(t, list) else t
        cases.append(Case(f"{describe(x0=x0, eps=eps)}, {_t_text(t)}", (x0, eps, t),
                          batch_labels=_t_labels(t, shape[0])))
    return cases


def check_conditional_flow(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(x0, eps, t) -> (x_t, u)`` against ``flow.flow_interpolate`` and ``flow.flow_target``."""
    return check("conditional_flow", fn, _reference_conditional_flow, _conditional_flow_cases(hidden),
                 _first_hint("conditional_flow"), output_names=("x_t", "u"), hidden=hidden)


def _reference_conditional_flow(x0: Tensor, eps: Tensor, t: Any) -> tuple[Tensor, Tensor]:
    return flow.flow_interpolate(x0, eps, t), flow.flow_target(x0, eps)


def _path_with(mix: Callable = lambda x0, eps, t: (1 - t) * x0 + t * eps,
               velocity: Callable = lambda x0, eps, t: eps - x0, flat: bool = False) -> Callable:
    """conditional_flow with one mistake; ``mix`` and ``velocity`` get t viewed per sample (or flat)."""
    def wrong(x0: Tensor, eps: Tensor, t: Any) -> tuple[Tensor, Tensor]:
        tt = torch.as_tensor(t, dtype=x0.dtype) if flat else _per_sample(t, x0)
        return mix(x0, eps, tt), velocity(x0, eps, tt)
    return wrong


CONDITIONAL_FLOW_MISTAKES = (
    Mistake("u points the wrong way: u = eps − x0, the velocity from the data (t = 0) towards the noise (t = 1) as t "
            "grows; with x0 − eps a sampler stepping t down from 1 to 0 would push its samples away from the data "
            "instead of towards it",
            _path_with(velocity=lambda x0, eps, t: x0 - eps)),
    Mistake("the ends are swapped: t = 0 is the data, x_t = (1 − t)·x0 + t·eps, so x_0 = x0 and x_1 = eps; "
            "t·x0 + (1 − t)·eps puts the noise at t = 0",
            _path_with(mix=lambda x0, eps, t: t * x0 + (1 - t) * eps)),
    Mistake("the ends and u are both reversed: that is the other convention (Lipman et al.'s, with the noise at "
            "t = 0); here t = 0 is the data, x_t = (1 − t)·x0 + t·eps and u = eps − x0",
            _path_with(mix=lambda x0, eps, t: t * x0 + (1 - t) * eps, velocity=lambda x0, eps, t: x0 - eps)),
    Mistake("u is the noise eps, the ε-prediction target of notebooks 05–06; the flow's target is the path's "
            "velocity, u = eps − x0", _path_with(velocity=lambda x0, eps, t: eps)),
    Mistake("the weights are √(1 − t) and √t, the variance-preserving mix of notebooks 02–03; the straight path "
            "weighs x0 by 1 − t and eps by t",
            _path_with(mix=lambda x0, eps, t: (1 - t).sqrt() * x0 + t.sqrt() * eps)),
    Mistake("u was multiplied by t: the straight path is walked at constant speed, so u = eps − x0 at every t "
            "(t·(eps − x0) is x_t − x0, how far it has gone)", _path_with(velocity=lambda x0, eps, t: t * (eps - x0))),
    Mistake(_FLAT_T, _path_with(flat=True)),
)


# -- 2. the Euler sampler -----------------------------------------------------------------------------
HINT_EULER_SAMPLE = ("Walk the pairs (t, t_next) of consecutive times: zip(timesteps[:-1], timesteps[1:]). At each, "
                     "u = velocity(x, t) with t as a tensor of shape (B,) (torch.full((len(x),), float(t))), then "
                     "x = x + (t_next − t)·u — negative steps, since time runs from 1 down to 0, and each pair's own "
                     "length: shifted timesteps are unevenly spaced, so not 1/steps. The last step ends at t = 0.")


class _Field:
    """A velocity field for the checks, called as the notebook calls a model: ``field(x, t)``, t a float tensor of
    shape (B,) (anything else is refused with a message saying how to make one). Deterministic and cheap."""

    def __init__(self, kind: str, seed: int, shape: tuple[int, ...]):
        g = torch.Generator().manual_seed(seed)
        self.kind = kind
        if kind == "linear":                        # u = (a + b·t)·x + c
            a, b, c = torch.rand(3, generator=g).tolist()
            self.a, self.b, self.c = -0.2 - a, 0.5 + 0.5 * b, c - 0.5
        elif kind == "conv":                        # u = tanh(conv(x))·(1 + t) − t·x/2
            self.weight = 0.4 * torch.randn(1, 1, 3, 3, generator=g)
        elif kind == "mixture":                     # the exact marginal velocity of a 2-D mixture
            k = 2 + seed % 2
            self.mixture = flow.GaussianMixtureFlow(
                (torch.ones(k) / k).tolist(), (2.5 * torch.randn(k, shape[1], generator=g)).tolist(),
                (0.3 + 0.4 * torch.rand(k, generator=g)).tolist())
        else:
            raise ValueError(f"kind must be 'linear', 'conv' or 'mixture'; got {kind!r}")

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        _require_times(t, x, "velocity(x, t)")
        if self.kind == "mixture":
            return self.mixture.velocity(x, t)
        tt = t.to(x.dtype).reshape(-1, *[1] * (x.ndim - 1))
        if self.kind == "linear":
            return (self.a + self.b * tt) * x + self.c
        c = x.shape[1]
        conv = torch.nn.functional.conv2d(x, self.weight.expand(c, 1, 3, 3), padding=1, groups=c)
        return torch.tanh(conv) * (1 + tt) - 0.5 * tt * x

    def __repr__(self) -> str:
        if self.kind == "linear":
            sign = "+" if self.c >= 0 else "−"
            return f"the linear field u = (−{-self.a:.3g} + {self.b:.3g}·t)·x {sign} {abs(self.c):.3g}"
        return "a small fixed conv field" if self.kind == "conv" else "the exact velocity of a 2-D Gaussian mixture"


def _euler_cases(hidden: bool = False) -> list[Case]:
    """(field, x1's shape, timesteps, what they are): uniform and shifted steps, one step [1, 0], a hand-made
    uneven grid; fields that change with t (so reading u at t_next shows) on points and on images. The hidden
    ones are drawn from the grader's seed: an uneven grid, shifted steps on images, one step, two steps."""
    if hidden:
        rng = hidden_rng("euler_cases")
        inner = sorted(rng.sample(range(5, 96, 5), rng.randint(2, 4)), reverse=True)
        uneven, h = [1.0, *[v / 100 for v in inner], 0.0], rng.randint(4, 7)
        settings = [("mixture", (rng.randint(3, 7), 2), uneven, "uneven, drawn"),
                    ("conv", (2, 2, h, h), (rng.randint(3, 6), rng.choice((2.0, 3.0))), None),
                    ("linear", (rng.randint(3, 6), 2), (1, 1.0), None),
                    ("mixture", (rng.randint(2, 5), 2), (2, 1.0), None)]
        first_seed = torch_seed(rng)
    else:
        settings = [("linear", (6, 2), (4, 1.0), None), ("mixture", (8, 2), (6, 3.0), None),
                    ("conv", (3, 1, 5, 5), (5, 1.0), None), ("conv", (2, 1, 4, 4), (1, 1.0), None),
                    ("linear", (2, 3, 4, 4), (3, 2.0), None)]
        first_seed = 0
    cases = []
    for seed, (kind, shape, times, what) in enumerate(settings, start=first_seed):
        g = torch.Generator().manual_seed(seed)
        x1 = torch.randn(shape, generator=g)
        if isinstance(times, list):
            timesteps = _times(times)
        else:
            steps, shift = times
            timesteps = flow.flow_timesteps(steps, shift=shift)
            what = ("one step" if steps == 1 else f"{steps} steps, " +
                    ("uniform" if shift == 1.0 else f"shifted (shift={shift:g}): unevenly spaced"))
        field = _Field(kind, seed, shape)
        grid = ", ".join(f"{v:.4g}" for v in timesteps.tolist())
        description = f"velocity={field!r}, x1 shape {tuple(shape)}, timesteps=tensor([{grid}]) ({what})"
        cases.append(Case(description, (field, x1, timesteps)))
    return cases


def check_euler_sample(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(velocity, x1, timesteps) -> x0`` against Euler steps (``flow.euler_step``) over ``timesteps``."""
    return check("euler_sample", fn, _reference_euler_sample, _euler_cases(hidden), _first_hint("euler_sample"),
                 atol=1e-4, rtol=1e-3, hidden=hidden)


def _reference_euler_sample(velocity: Callable, x1: Tensor, timesteps: Tensor) -> Tensor:
    x, times = x1, timesteps.tolist()
    for t, t_next in zip(times[:-1], times[1:]):
        u = velocity(x, torch.full((x.shape[0],), t, dtype=x.dtype))
        x = flow.euler_step(x, u, t, t_next)
    return x


def _euler_with(sign: float = 1.0, read_at_next: bool = False, constant_dt: bool = False,
                skip_last: bool = False) -> Callable:
    """euler_sample with one mistake."""
    def wrong(velocity: Callable, x1: Tensor, timesteps: Tensor) -> Tensor:
        x, times = x1, timesteps.tolist()
        pairs = list(zip(times[:-1], times[1:]))
        for t, t_next in pairs[:-1] if skip_last else pairs:
            u = velocity(x, torch.full((x.shape[0],), t_next if read_at_next else t, dtype=x.dtype))
            dt = -1.0 / len(pairs) if constant_dt else t_next - t
            x = x + sign * dt * u
        return x
    return wrong


EULER_SAMPLE_MISTAKES = (
    Mistake("the step has the wrong sign: x = x + (t_next − t)·u, and t_next − t is negative (time runs from 1 down "
            "to 0); x + (t − t_next)·u walks away from the data", _euler_with(sign=-1.0)),
    Mistake("the velocity was read at t_next; Euler reads it where the step starts, u = velocity(x, t) at the "
            "current t", _euler_with(read_at_next=True)),
    Mistake("every step has the length 1/steps; shifted timesteps are unevenly spaced, so each step's length is its "
            "own t_next − t", _euler_with(constant_dt=True)),
    Mistake("the loop stopped one step early, at t = timesteps[−2] > 0: with steps + 1 times there are steps steps, "
            "the last one ending at t = 0", _euler_with(skip_last=True)),
)


# -- 3. logit-normal training times -----------------------------------------------------------------
HINT_LOGIT_NORMAL = ("z = torch.randn(n, generator=generator), one standard normal number per time; then "
                     "t = sigmoid(mean + std·z). The sigmoid comes last, after adding mean and multiplying by std "
                     "(std is a standard deviation, not a variance), so that t stays strictly inside (0, 1) and "
                     "logit(t) ~ N(mean, std²); passing the generator makes the draw repeatable.")

_LOGISTIC_STD = math.pi / math.sqrt(3)              # the std of logit(U), U uniform on (0, 1)

LOGIT_NORMAL_MISTAKES = (
    Mistake("t looks uniform (torch.rand): the logit of a uniform number has mean 0 and standard deviation π/√3 ≈ "
            "1.81 whatever mean and std ask for; draw z = torch.randn(n, generator=generator) and return "
            "sigmoid(mean + std·z)", lambda n, mean=0.0, std=1.0, generator=None: torch.rand(n, generator=generator)),
    Mistake("the sigmoid came before mean and std: mean + std·sigmoid(z) leaves (0, 1); t = sigmoid(mean + std·z), "
            "the sigmoid last",
            lambda n, mean=0.0, std=1.0, generator=None: mean + std * torch.sigmoid(
                torch.randn(n, generator=generator))),
    Mistake("mean has the wrong sign: t = sigmoid(mean + std·z), so a positive mean moves the times towards 1 (the "
            "noise)", lambda n, mean=0.0, std=1.0, generator=None: torch.sigmoid(-mean + std * torch.randn(
                n, generator=generator))),
    Mistake("std was used as a variance (√std·z): std multiplies z itself, t = sigmoid(mean + std·z)",
            lambda n, mean=0.0, std=1.0, generator=None: torch.sigmoid(mean + math.sqrt(std) * torch.randn(
                n, generator=generator))),
    Mistake("the generator was not used: pass it on, z = torch.randn(n, generator=generator), so that a seeded "
            "generator gives the same times again",
            lambda n, mean=0.0, std=1.0, generator=None: torch.sigmoid(mean + std * torch.randn(n))),
)
_UNIFORM, _SIGMOID_FIRST, _MEAN_SIGN, _STD_AS_VARIANCE, _NO_GENERATOR = (m.description for m in LOGIT_NORMAL_MISTAKES)


def _named(description: str) -> str:
    return f"\n  This looks like a common mistake: {description}."


def _not_times(out: Any, n: int) -> Optional[str]:
    """What is wrong with the type or shape of ``out`` for n times, or None."""
    if not isinstance(out, Tensor):
        return f"expected a torch.Tensor of shape ({n},), got {type(out).__name__}"
    if tuple(out.shape) != (n,):
        return f"wrong shape: expected ({n},), one time per sample, got {tuple(out.shape)}"
    if not out.is_floating_point():
        return f"expected floating-point times, got {out.dtype}"
    return None


def _logit_normal_properties(hidden: bool = False) -> list[tuple[str, Callable[[Callable], Optional[str]]]]:
    """Shape, the open interval, logit(t)'s mean and std (within 5 standard errors, n = 40,000 per pair), and the
    generator. The pairs move the mean and stretch the std, so that each common mistake fails somewhere."""
    if hidden:      # drawn from the grader's seed: sizes n, (mean, std) pairs, the generators' seeds
        sizes, inside, seeds, moments = _hidden_logit_normal_settings(hidden_rng("logit_normal_properties"))
    else:
        sizes, inside, seeds = (1000, 3), [(0.5, 1.0), (0.0, 2.0)], (0, 1)
        moments = [(0.0, 1.0), (1.0, 0.5), (-0.5, 2.0)]
    n = 40_000

    def shape(f: Callable) -> Optional[str]:
        for size in sizes:
            problem = _not_times(f(size), size)
            if problem is not None:
                return f"with n={size}: {problem}"
        return None

    def open_interval(f: Callable) -> Optional[str]:
        for seed, (mean, std) in enumerate(inside, start=seeds[0]):
            t = f(n, mean=mean, std=std, generator=torch.Generator().manual_seed(seed))
            problem = _not_times(t, n)
            if problem is not None:
                return f"with mean={mean}, std={std}: {problem}"
            if not bool(((t > 0) & (t < 1)).all()):
                low, high = t.min().item(), t.max().item()
                mistake = _named(_SIGMOID_FIRST) if low < 0 or high > 1 else ""
                return (f"with mean={mean}, std={std}, the times range from {low:.4g} to {high:.4g}; every t must lie "
                        f"strictly inside (0, 1){mistake}")
        return None

    def logit_moments(f: Callable) -> Optional[str]:
        for seed, (mean, std) in enumerate(moments, start=seeds[0] + 10):
            t = f(n, mean=mean, std=std, generator=torch.Generator().manual_seed(seed))
            problem = _not_times(t, n)
            if problem is not None:
                return f"with mean={mean}, std={std}: {problem}"
            z = torch.logit(t.double())
            if not bool(torch.isfinite(z).all()):
                return f"with mean={mean}, std={std}, some t are 0 or 1 (or not numbers): logit(t) is not finite there"
            got_mean, got_std = z.mean().item(), z.std().item()
            close = lambda m, s, scale: abs(got_mean - m) <= 5 * scale / n ** 0.5 and \
                abs(got_std - s) <= 5 * scale / (2 * n) ** 0.5
            if close(mean, std, std):
                continue
            if close(0.0, _LOGISTIC_STD, _LOGISTIC_STD):
                mistake = _named(_UNIFORM)
            elif mean != 0 and close(-mean, std, std):
                mistake = _named(_MEAN_SIGN)
            elif std != 1 and close(mean, math.sqrt(std), std):
                mistake = _named(_STD_AS_VARIANCE)
            else:
                mistake = ""
            return (f"with mean={mean}, std={std} ({n:,} times), logit(t) has mean {got_mean:.3f} and standard "
                    f"deviation {got_std:.3f}; expected {mean} and {std} (each within {5 * std / n ** 0.5:.3f}, five "
                    f"standard errors){mistake}")
        return None

    def generator_used(f: Callable) -> Optional[str]:
        draw = lambda seed: f(1000, mean=0.0, std=1.0, generator=torch.Generator().manual_seed(seed))
        a, b, c = draw(seeds[1] + 100), draw(seeds[1] + 100), draw(seeds[1] + 101)
        for out in (a, b, c):
            problem = _not_times(out, 1000)
            if problem is not None:
                return problem
        if not torch.equal(a, b):
            return f"two generators seeded alike gave different times{_named(_NO_GENERATOR)}"
        if torch.equal(a, c):
            return "generators with different seeds gave the same times: draw z from the generator you are given"
        return None

    return [("t has shape (n,) and is floating-point", shape),
            ("every t lies strictly inside (0, 1)", open_interval),
            ("logit(t) has the mean and standard deviation asked for", logit_moments),
            ("the same seeded generator gives the same t, another seed other t", generator_used)]


def _hidden_logit_normal_settings(rng: random.Random) -> tuple:
    """Sizes (1 and a small n), two wide or narrow (mean, std) pairs for the interval, seeds, and three pairs for the
    moments with mean ≠ 0 (so a flipped sign shows) and std away from 1 and from logit(U)'s 1.81 (so std² and
    uniform t show)."""
    signed = lambda: rng.choice((-1, 1)) * rng.randint(3, 20) / 10
    std = lambda: rng.choice((rng.randint(4, 8), rng.randint(12, 16))) / 10
    first = rng.randint(11, 99)
    return ((1, rng.randint(2, 9)), [(signed(), rng.randint(25, 35) / 10), (signed(), rng.randint(3, 5) / 10)],
            (first, first + 1), [(signed(), std()) for _ in range(3)])


def check_logit_normal(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(n, mean=0.0, std=1.0, generator=None) -> t`` (random) by its properties against
    ``flow.logit_normal_t``: shape, t inside (0, 1), logit(t) ~ N(mean, std²), the generator used."""
    return check_properties("logit_normal", fn, _reference_logit_normal, _logit_normal_properties(hidden),
                            _first_hint("logit_normal"), hidden=hidden)


def _reference_logit_normal(n: int, mean: float = 0.0, std: float = 1.0,
                            generator: Optional[torch.Generator] = None) -> Tensor:
    return flow.logit_normal_t(n, mean, std, generator=generator)


# -- 4. the loss on a reflow pair -----------------------------------------------------------------------
HINT_REFLOW_LOSS = ("x_t = (1 − t)·z0 + t·z1 with t viewed per sample ((B, 1) or (B, 1, 1, 1)); the target is the "
                    "straight line's velocity z1 − z0; the loss is the mean over everything (the batch and every "
                    "coordinate) of (model(x_t, t) − (z1 − z0))², one number. Call the model with t itself, shape "
                    "(B,). Your conditional_flow(z0, z1, t) gives x_t and the target at once.")


class _TinyVelocityNet(torch.nn.Module):
    """A fixed, seeded stand-in for a flow network: a depthwise conv on images or a tiny MLP on 2-D points,
    called ``model(x, t)`` with t a float tensor of shape (B,) (anything else is refused, saying why)."""

    def __init__(self, kind: str, seed: int, channels: int = 2):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.kind = kind
        if kind == "conv":
            self.register_buffer("weight", 0.4 * torch.randn(1, 1, 3, 3, generator=g))
        elif kind == "mlp":
            self.register_buffer("w1", torch.randn(channels + 1, 16, generator=g) / math.sqrt(channels + 1))
            self.register_buffer("b1", 0.1 * torch.randn(16, generator=g))
            self.register_buffer("w2", torch.randn(16, channels, generator=g) / 4)
        else:
            raise ValueError(f"kind must be 'conv' or 'mlp'; got {kind!r}")

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        _require_times(t, x, "model(x_t, t)")
        t = t.to(x.dtype)
        if self.kind == "mlp":
            return torch.tanh(torch.cat([x, t[:, None]], 1) @ self.w1 + self.b1) @ self.w2
        c = x.shape[1]
        conv = torch.nn.functional.conv2d(x, self.weight.expand(c, 1, 3, 3), padding=1, groups=c)
        return torch.tanh(conv) * (1 + t.view(-1, 1, 1, 1)) - 0.3 * x

    def __repr__(self) -> str:
        return "a small fixed conv net" if self.kind == "conv" else "a tiny fixed MLP"


def _reflow_cases(hidden: bool = False) -> list[Case]:
    """(model, pair shape, t): images and 2-D points, t = 0 and t = 1 among the times; the hidden ones start with
    B = W (a flat t then broadcasts over the columns silently), drawn from the grader's seed."""
    if hidden:
        rng = hidden_rng("reflow_cases")
        b = rng.randint(3, 6)
        settings = [("conv", (b, 1, rng.randint(4, 6), b), _drawn_times(rng, b, ends=True)),
                    ("mlp", (rng.randint(5, 12), 2), None),
                    ("conv", (2, 3, rng.randint(4, 6), rng.randint(5, 7)), _drawn_times(rng, 2))]
        first_seed = torch_seed(rng)
    else:
        settings = [("conv", (4, 1, 6, 6), [0.0, 0.3, 0.7, 1.0]), ("mlp", (6, 2), [1.0, 0.5, 0.0, 0.25, 0.8, 0.6]),
                    ("conv", (3, 2, 5, 5), [0.9, 0.05, 0.5]), ("mlp", (16, 2), None)]
        first_seed = 0
    cases = []
    for seed, (kind, shape, t) in enumerate(settings, start=first_seed):
        g = torch.Generator().manual_seed(seed)
        z0, z1 = torch.randn(shape, generator=g).clamp(-1, 1), torch.randn(shape, generator=g)
        t = _times(t) if t is not None else torch.rand(shape[0], generator=g)
        model = _TinyVelocityNet(kind, seed, shape[1])
        cases.append(Case(f"model={model!r}, {describe(z0=z0, z1=z1)}, {_t_text(t)}", (model, z0, z1, t),
                          batch_labels=_t_labels(t, shape[0])))
    return cases


def check_reflow_loss(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(model, z0, z1, t) -> scalar`` against ``flow.flow_loss(model, z0, z1, t)``: the flow loss on a
    coupled pair (z0 at t = 0, z1 at t = 1)."""
    return check("reflow_loss", fn, _reference_reflow_loss, _reflow_cases(hidden), _first_hint("reflow_loss"),
                 hidden=hidden)


def _reference_reflow_loss(model: Callable, z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
    return flow.flow_loss(model, z0, z1, t)


def _reflow_with(mix: Callable = lambda z0, z1, t: (1 - t) * z0 + t * z1,
                 target: Callable = lambda z0, z1: z1 - z0, reduce: Callable = lambda e: e.mean(),
                 flat: bool = False) -> Callable:
    """reflow_loss with one mistake; ``reduce`` gets the squared errors."""
    def wrong(model: Callable, z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
        tt = t if flat else _per_sample(t, z0)
        return reduce((model(mix(z0, z1, tt), t) - target(z0, z1)) ** 2)
    return wrong


REFLOW_LOSS_MISTAKES = (
    Mistake("the target has the wrong sign: the straight line from z0 (t = 0) to z1 (t = 1) has velocity z1 − z0",
            _reflow_with(target=lambda z0, z1: z0 - z1)),
    Mistake("the ends are swapped: z0, the model's sample, sits at t = 0 and the noise z1 at t = 1, so x_t = "
            "(1 − t)·z0 + t·z1", _reflow_with(mix=lambda z0, z1, t: t * z0 + (1 - t) * z1)),
    Mistake("the squared errors were summed; the loss is their mean over everything (the batch and every "
            "coordinate)", _reflow_with(reduce=lambda e: e.sum())),
    Mistake("the target is z1, the noise; the model learns the straight line's velocity, z1 − z0",
            _reflow_with(target=lambda z0, z1: z1)),
    Mistake("one loss per sample was returned, shape (B,): average those too, to one number",
            _reflow_with(reduce=lambda e: e.flatten(1).mean(1))),
    Mistake(_FLAT_T, _reflow_with(flat=True)),
)


register(
    Exercise("conditional_flow", "conditional_flow", _reference_conditional_flow, (
        "Each data point x0 and its noise eps are joined by a straight line, walked at constant speed from the data "
        "(t = 0) to the noise (t = 1): x_t is the point a fraction t of the way along, and u, its velocity, is "
        "the same at every t — the whole step from x0 to eps.",
        HINT_CONDITIONAL_FLOW,
        "tt = torch.as_tensor(t, dtype=x0.dtype).reshape(-1, *[1] * (x0.ndim − 1)) (a float becomes shape "
        "(1, 1, …), which broadcasts too); return (1 − tt) * x0 + tt * eps, eps − x0."),
        CONDITIONAL_FLOW_MISTAKES, ("minidiff.flow.flow_interpolate", "minidiff.flow.flow_target",
                                    "minidiff.flow.x0_from_velocity", "minidiff.flow.eps_from_velocity"),
        error_advice=_flat_t_advice("x0")),
    Exercise("euler_sample", "euler_sample", _reference_euler_sample, (
        "Start at the noise x1 (t = 1) and walk down to the data (t = 0) through the times you are given: at each "
        "time read the velocity where you stand and move along it for the length of the step. Time runs "
        "downwards, so every step's length is negative.",
        HINT_EULER_SAMPLE,
        "x = x1; for t, t_next in zip(timesteps[:-1], timesteps[1:]): u = velocity(x, torch.full((len(x),), "
        "float(t))); x = x + (t_next − t) * u (a new tensor: x += … would overwrite x1); return x."),
        EULER_SAMPLE_MISTAKES, ("minidiff.flow.flow_integrate", "minidiff.flow.flow_sample",
                                "minidiff.flow.euler_step")),
    Exercise("logit_normal", "logit_normal", _reference_logit_normal, (
        "Training spends its times where predicting u is hardest, in the middle of the path: draw a normal number, "
        "move and stretch it by mean and std, and squash it into (0, 1) with the sigmoid, so the times gather "
        "around the middle and never reach the ends.",
        HINT_LOGIT_NORMAL,
        "z = torch.randn(n, generator=generator); return torch.sigmoid(mean + std * z)."),
        LOGIT_NORMAL_MISTAKES, ("minidiff.flow.logit_normal_t", "minidiff.flow.FlowObjective.draw_t")),
    Exercise("reflow_loss", "reflow_loss", _reference_reflow_loss, (
        "Reflow trains on fixed pairs: z0 is the sample the model's own ODE reached from the noise z1. Put each "
        "pair's point at its time t on the straight line between them, ask the model for the velocity there, and "
        "penalise its squared distance from the line's own velocity — flow matching's loss, with z1 in place of "
        "fresh noise.",
        HINT_REFLOW_LOSS,
        "tt = t.view(-1, *[1] * (z0.ndim − 1)); x_t = (1 − tt) * z0 + tt * z1; return ((model(x_t, t) − (z1 − z0)) "
        "** 2).mean()."),
        REFLOW_LOSS_MISTAKES, ("minidiff.flow.flow_loss", "minidiff.flow.FlowObjective.__call__",
                               "minidiff.flow.ReflowObjective.__call__"),
        depends_on=("conditional_flow",), error_advice=_flat_t_advice("z0")),
)
