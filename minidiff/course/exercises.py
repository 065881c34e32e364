r"""Automatic checks for the notebooks' exercises.

Each exercise cell defines a function; the cell after it hands that function to a check:

    q_step = md.exercises.check_q_step(q_step)

The check runs the function and minidiff's own implementation on a few fixed inputs (several
shapes, a batch of t and a single int t, the edges t = 0 and t = T−1, explicit noise) and then

* all cases match          → prints one line and returns the learner's function;
* NotImplementedError      → the exercise is not attempted yet: prints a note and returns
                             minidiff's reference, so the rest of the notebook still runs (under
                             nbgrader's autograde, where NBGRADER_EXECUTION is set, it fails instead);
* a wrong result or error  → raises ``ExerciseError`` naming the case, what differs
                             (shape, dtype or values, expected vs got) and a hint.

``check`` is the generic core; ``check_q_step`` and friends are thin wrappers around it.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

# Plain submodule imports: neither imports this module, so minidiff/__init__ may import us anywhere.
from .. import diffusion, schedules


class ExerciseError(AssertionError):
    """An exercise function gave a wrong answer (or crashed) on one of the check's cases."""


@dataclass(frozen=True)
class Case:
    """One input to an exercise: ``fn(*args, **kwargs)``, described for error messages."""
    description: str
    args: tuple
    kwargs: dict = field(default_factory=dict)


# -- the generic core ---------------------------------------------------------------------------
def check(name: str, fn: Callable, reference: Callable, cases: Sequence[Case], hint: str,
          atol: float = 1e-5, rtol: float = 1e-4, output_names: Sequence[str] = ()) -> Callable:
    """Compare ``fn`` with ``reference`` on every case; return the function later cells should use.

    ``output_names`` names the elements when the reference returns a tuple (e.g. "mean", "variance").
    """
    if not callable(fn):
        raise TypeError(f"{name}: the check expects your function; got {type(fn).__name__}")
    if not cases:
        raise ValueError(f"{name}: cases must hold at least one Case; got none")
    # A learner's stray torch.randn must not shift the random numbers of the notebook's later cells.
    with torch.random.fork_rng(devices=[]):
        for i, case in enumerate(cases, start=1):
            where = f"case {i} of {len(cases)}: {case.description}"
            expected = _call(reference, case)
            try:
                got = _call(fn, case)
            except NotImplementedError as exc:
                return not_attempted(name, reference, exc)
            except ExerciseError:                                # a check inside the case said what is wrong
                raise
            except Exception as exc:
                raise ExerciseError(f"{name} raised an error on {where}\n"
                                    f"  {type(exc).__name__}: {exc}\n  Hint: {hint}") from exc
            problem = compare(expected, got, atol, rtol, output_names)
            if problem is not None:
                raise ExerciseError(f"{name} is not right yet, on {where}\n  {problem}\n  Hint: {hint}")
    print(f"✓ {name}: correct on {len(cases)} test cases.")
    return fn


def not_attempted(name: str, reference: Callable, exc: NotImplementedError) -> Callable:
    """The exercise still raises NotImplementedError: the reference stands in for it (an ExerciseError,
    scoring 0, under nbgrader's autograde)."""
    if os.environ.get("NBGRADER_EXECUTION"):        # set by nbgrader's autograde and validate
        raise ExerciseError(f"{name} was not attempted: the exercise cell still raises "
                            f"NotImplementedError, so this check scores 0") from exc
    print(f"{name}: not attempted yet — using minidiff's reference implementation so the "
          f"rest of the notebook runs. (Replace the raise in the exercise cell to try it.)")
    return reference


Property = tuple[str, Callable[[Callable], Optional[str]]]      # (what it checks, test(fn) -> problem or None)


def check_properties(name: str, fn: Callable, reference: Callable, properties: Sequence[Property],
                     hint: str) -> Callable:
    """Like ``check``, for a function whose output is random: each property calls ``fn`` itself and
    returns what is wrong (one line) or None. The reference must pass them all (a unit test checks)."""
    if not callable(fn):
        raise TypeError(f"{name}: the check expects your function; got {type(fn).__name__}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for i, (description, test) in enumerate(properties, start=1):
            try:
                problem = test(fn)
            except NotImplementedError as exc:
                return not_attempted(name, reference, exc)
            except Exception as exc:
                raise ExerciseError(f"{name} raised an error on check {i} of {len(properties)}: {description}\n"
                                    f"  {type(exc).__name__}: {exc}\n  Hint: {hint}") from exc
            if problem is not None:
                raise ExerciseError(f"{name} is not right yet, on check {i} of {len(properties)}: {description}\n"
                                    f"  {problem}\n  Hint: {hint}")
    print(f"✓ {name}: passes all {len(properties)} checks.")
    return fn


def _call(fn: Callable, case: Case) -> Any:
    """``fn`` on a private copy of the case's inputs, so in-place edits cannot leak between calls."""
    args, kwargs = copy.deepcopy((case.args, case.kwargs))
    return fn(*args, **kwargs)


def compare(expected: Any, got: Any, atol: float, rtol: float,
            output_names: Sequence[str] = ()) -> Optional[str]:
    """What is wrong with ``got`` (one line), or None when it matches ``expected``."""
    if not isinstance(expected, tuple):
        return compare_tensors(expected, got, atol, rtol)
    names = list(output_names) or [f"element {i}" for i in range(len(expected))]
    if not isinstance(got, (tuple, list)) or len(got) != len(expected):
        length = f" of length {len(got)}" if isinstance(got, (tuple, list)) else ""
        return f"wrong return value: expected a tuple ({', '.join(names)}), got a {type(got).__name__}{length}"
    for element, e, g in zip(names, expected, got):
        problem = compare_tensors(e, g, atol, rtol)
        if problem is not None:
            return f"{element}: {problem}"
    return None


def compare_tensors(expected: Tensor, got: Any, atol: float, rtol: float) -> Optional[str]:
    """Shape, then dtype, then values (``torch.isclose`` with ``atol``/``rtol``); None when all agree."""
    if not isinstance(got, Tensor):
        return f"wrong type: expected a torch.Tensor, got {type(got).__name__}"
    if got.shape != expected.shape:
        return f"wrong shape: expected {tuple(expected.shape)}, got {tuple(got.shape)}"
    if got.dtype != expected.dtype:
        note = ""
        if got.dtype == torch.float64:
            note = " (the schedule's tables are float64: cast coefficients to the image's dtype, .to(x.dtype))"
        return f"wrong dtype: expected {expected.dtype}, got {got.dtype}{note}"
    close = torch.isclose(got, expected, atol=atol, rtol=rtol, equal_nan=True)
    if close.all():
        return None
    error = torch.where(close, 0.0, (got - expected).abs().nan_to_num(nan=float("inf")))
    at = tuple(int(i) for i in torch.unravel_index(error.argmax(), error.shape))
    return (f"wrong values: {int((~close).sum())} of {close.numel()} entries differ, largest abs error "
            f"{error.max().item():.3g} at index {at}: expected {expected[at].item():.6g}, got "
            f"{got[at].item():.6g} (tolerance atol={atol:g}, rtol={rtol:g})")


def describe(**inputs: Any) -> str:
    """A case's inputs in words: ``x_prev shape (2, 1, 4, 4), t=tensor([0, 9]), schedule=cosine (T=10)``."""
    return ", ".join(_describe_one(name, value) for name, value in inputs.items())


def _describe_one(name: str, value: Any) -> str:
    if isinstance(value, schedules.NoiseSchedule):
        return f"{name}={value.name} (T={value.num_steps})"
    if isinstance(value, torch.nn.Module):
        return f"{name}=a small {type(value).__name__}"
    if isinstance(value, Tensor) and value.is_floating_point():
        return f"{name} shape {tuple(value.shape)}"
    if isinstance(value, Tensor):                   # timesteps, without repr's column padding
        return f"{name}=tensor({value.tolist()})"
    return f"{name}={value!r}"


# -- inputs shared by the image exercises --------------------------------------------------------
# (image shape, t, schedule): an int t and batches of t, the edges t = 0 and t = T−1, unsorted t.
_IMAGE_CASES = [
    ((2, 1, 4, 4), 0, ("linear", 1000)),
    ((3, 1, 8, 8), [0, 10, 999], ("linear", 1000)),
    ((4, 1, 28, 28), [0, 10, 500, 999], ("cosine", 1000)),
    ((2, 3, 6, 6), 999, ("cosine", 1000)),
    ((5, 2, 4, 4), [49, 0, 25, 1, 48], ("sigmoid", 50)),
]


# Float32 images: a learner may cast the float64 tables to float32 before the arithmetic, and 1 − ᾱ_t
# then loses up to ~1e-3 of its relative precision near t = 0 (ᾱ_0 ≈ 1), so allow for that.
IMAGE_TOLERANCE = {"atol": 2e-4, "rtol": 2e-3}


def image_cases(arg_names: Sequence[str]) -> list[Case]:
    """Cases with positional args named ``arg_names``: "t", "schedule", or else an image (seeded N(0, I))."""
    cases = []
    for seed, (shape, t, (kind, num_steps)) in enumerate(_IMAGE_CASES):
        generator = torch.Generator().manual_seed(seed)
        fixed = {"t": torch.tensor(t) if isinstance(t, list) else t,
                 "schedule": schedules.make_schedule(kind, num_steps)}
        inputs = {n: fixed[n] if n in fixed else torch.randn(shape, generator=generator) for n in arg_names}
        cases.append(Case(describe(**inputs), tuple(inputs.values())))
    return cases


def _schedule_betas_cases() -> list[Case]:
    """β tables of several schedules and lengths, plus a tiny hand-made one."""
    tables = [schedules.NoiseSchedule.linear(10), schedules.NoiseSchedule.cosine(10),
              schedules.NoiseSchedule.linear(1000), schedules.NoiseSchedule.sigmoid(20)]
    cases = [Case(f"betas of the {s.name} schedule, T={s.num_steps} (float64)", (s.betas,))
             for s in tables]
    hand_made = torch.tensor([0.5, 0.25, 0.1], dtype=torch.float64)
    return cases + [Case(f"betas={hand_made!r}", (hand_made,))]


# -- notebook 01: the forward process ------------------------------------------------------------
HINT_Q_STEP = ("x_t = √α_t·x_{t−1} + √β_t·ε with α_t = 1 − β_t = schedule.alphas[t] and β_t = schedule.betas[t]"
               " — did you use ᾱ_t (alphas_cumprod) instead of α_t, or forget a square root? Use the noise you"
               " are given; for t of shape (B,) reshape the coefficients to (B, 1, 1, 1) and cast them to"
               " x_prev's dtype.")


def check_q_step(fn: Callable) -> Callable:
    """Check ``fn(x_prev, t, schedule, noise) -> x_t``, one forward step, against ``minidiff.q_step``."""
    cases = image_cases(("x_prev", "t", "schedule", "noise"))
    return check("q_step", fn, diffusion.q_step, cases, HINT_Q_STEP, **IMAGE_TOLERANCE)


# -- notebook 02: the closed form and the posterior ----------------------------------------------
HINT_ALPHAS_CUMPROD = ("ᾱ_t = ∏_{s≤t} (1 − β_s): a running *product* (torch.cumprod(..., dim=0)) of"
                       " α = 1 − β, including step t itself, so ᾱ_0 = 1 − β_0. Return one value per β,"
                       " in float64.")

HINT_Q_SAMPLE = ("x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε with ᾱ_t = schedule.alphas_cumprod[t] (the running product,"
                 " not α_t) at exactly t (0-indexed: no t − 1 or t + 1). Use the noise you are given; for t of"
                 " shape (B,) reshape the coefficients to (B, 1, 1, 1) and cast them to x0's dtype.")

HINT_POSTERIOR_MEAN = ("μ̃_t = √ᾱ_{t−1}·β_t/(1 − ᾱ_t)·x_0 + √α_t·(1 − ᾱ_{t−1})/(1 − ᾱ_t)·x_t — x_0 takes"
                       " the β_t coefficient, x_t the √α_t one. ᾱ_{t−1} is schedule.alphas_cumprod_prev[t],"
                       " which is 1 at t = 0 (alphas_cumprod[t − 1] wraps around to the last entry there).")


def check_alphas_cumprod(fn: Callable) -> Callable:
    """Check ``fn(betas) -> alphas_cumprod`` (1-D float64, same length) against ``cumprod(1 - betas)``."""
    return check("alphas_cumprod", fn, _reference_alphas_cumprod, _schedule_betas_cases(), HINT_ALPHAS_CUMPROD)


def _reference_alphas_cumprod(betas: Tensor) -> Tensor:
    return torch.cumprod(1.0 - betas, dim=0)


def check_q_sample(fn: Callable) -> Callable:
    """Check ``fn(x0, t, schedule, noise) -> x_t``, the closed-form jump, against ``minidiff.q_sample``."""
    cases = image_cases(("x0", "t", "schedule", "noise"))
    return check("q_sample", fn, diffusion.q_sample, cases, HINT_Q_SAMPLE, **IMAGE_TOLERANCE)


def check_posterior_mean(fn: Callable) -> Callable:
    """Check ``fn(x0, x_t, t, schedule) -> mean of q(x_{t−1} | x_t, x_0)`` against ``minidiff.q_posterior``."""
    cases = image_cases(("x0", "x_t", "t", "schedule"))
    return check("posterior_mean", fn, _reference_posterior_mean, cases, HINT_POSTERIOR_MEAN, **IMAGE_TOLERANCE)


def _reference_posterior_mean(x0: Tensor, x_t: Tensor, t: schedules.Timesteps,
                              schedule: schedules.NoiseSchedule) -> Tensor:
    return diffusion.q_posterior(x0, x_t, t, schedule)[0]


# -- notebook 03: schedules ---------------------------------------------------------------------
HINT_COSINE = ("ᾱ(u) = cos²((u + s)/(1 + s)·π/2) at the T + 1 points u = t/T, t = 0 … T; then "
               "β_t = 1 − ᾱ((t+1)/T)/ᾱ(t/T) for t = 0 … T−1, clipped to at most max_beta "
               "(.clamp(max=max_beta)). Keep the offset s, compute in float64, return T values.")


def check_cosine_schedule(fn: Callable) -> Callable:
    """Check ``fn(num_steps, s=0.008, max_beta=0.999) -> betas`` against ``NoiseSchedule.cosine().betas``."""
    settings = [(10, {}), (100, {}), (1000, {}), (100, {"s": 0.02}), (20, {"s": 0.0, "max_beta": 0.5})]
    cases = [Case(describe(num_steps=n, **kwargs), (n,), kwargs) for n, kwargs in settings]
    return check("cosine_schedule", fn, _reference_cosine_betas, cases, HINT_COSINE)


def _reference_cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    return schedules.NoiseSchedule.cosine(num_steps, s=s, max_beta=max_beta).betas


# -- notebook 04: the U-Net ---------------------------------------------------------------------
HINT_EMBEDDING = ("ω_i = max_period^(−i/h) for i = 0 … h−1 with h = dim/2 (torch.exp(−log(max_period)·i/h)); "
                  "angles = t[:, None]·ω[None, :] in float32; return torch.cat([cos(angles), sin(angles)], dim=1) "
                  "— cosines first, shape (B, dim).")

HINT_INJECT_TIME = ("Apply SiLU to emb, then emb_layer: (B, 2C). The first C columns are the scale γ, the last C "
                    "the shift β (.chunk(2, dim=1)); reshape both to (B, C, 1, 1) and return h·(1 + γ) + β — "
                    "note the 1 +, and that the SiLU comes before the linear layer.")


def check_timestep_embedding(fn: Callable) -> Callable:
    """Check ``fn(t, dim, max_period=10000) -> (B, dim)`` against ``minidiff.timestep_embedding`` (even dims)."""
    from ..nn.embedding import timestep_embedding
    settings = [([0, 1, 2], 2, {}), ([0, 10, 500, 999], 8, {}), ([3, 999], 64, {}),
                ([0, 250, 999], 128, {}), ([5, 50], 16, {"max_period": 100})]
    cases = [Case(describe(t=torch.tensor(t), dim=d, **kw), (torch.tensor(t), d), kw) for t, d, kw in settings]
    return check("timestep_embedding", fn, timestep_embedding, cases, HINT_EMBEDDING, atol=1e-4, rtol=1e-4)


def check_inject_time(fn: Callable) -> Callable:
    """Check ``fn(h, emb, emb_layer) -> h·(1 + γ) + β`` (FiLM) against the U-Net's ``film``."""
    from ..nn.blocks import film
    cases = []
    with torch.random.fork_rng(devices=[]):            # seeded layers without touching the notebook's RNG
        for seed, (b, c, hw, e) in enumerate([(2, 4, 3, 8), (3, 16, 7, 32), (1, 8, 14, 16)]):
            torch.manual_seed(seed)
            h, emb, layer = torch.randn(b, c, hw, hw), torch.randn(b, e), torch.nn.Linear(e, 2 * c)
            cases.append(Case(describe(h=h, emb=emb) + f", emb_layer=Linear({e}, {2 * c})", (h, emb, layer)))
    return check("inject_time", fn, film, cases, HINT_INJECT_TIME)


# -- notebook 05: training ----------------------------------------------------------------------
HINT_TRAINING_LOSS = ("x_t = q_sample(x0, t, s, noise) (√ᾱ_t·x0 + √(1 − ᾱ_t)·noise); the network sees x_t "
                      "and t — not x0 — and predicts the noise: return ((model(x_t, t) − noise)²).mean(), "
                      "a mean over every pixel of the batch (not a sum, and not against x0).")


class _TinyDenoiser(torch.nn.Module):
    """A small deterministic stand-in for a U-Net: a conv whose output depends on x_t and on t."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.conv(x) * (1 + t.float().view(-1, 1, 1, 1) / 1000)


def check_training_loss(fn: Callable) -> Callable:
    """Check ``fn(model, x0, t, noise, s) -> scalar`` against ``minidiff.diffusion_loss`` with the same t and ε."""
    from ..losses import diffusion_loss
    cases = []
    with torch.random.fork_rng(devices=[]):            # seeded models without touching the notebook's RNG
        for seed, (shape, t, kind) in enumerate([((4, 1, 8, 8), [0, 10, 500, 999], "linear"),
                                                 ((3, 3, 6, 6), [999, 1, 250], "cosine")]):
            torch.manual_seed(seed)
            model, x0, noise = _TinyDenoiser(shape[1]), torch.randn(shape), torch.randn(shape)
            s = schedules.make_schedule(kind, 1000)
            inputs = dict(model=model, x0=x0, t=torch.tensor(t), noise=noise, schedule=s)
            cases.append(Case(describe(**inputs), tuple(inputs.values())))

    def reference(model: Callable, x0: Tensor, t: Tensor, noise: Tensor, s: schedules.NoiseSchedule) -> Tensor:
        return diffusion_loss(model, x0, s, t=t, noise=noise)
    return check("training_loss", fn, reference, cases, HINT_TRAINING_LOSS, **IMAGE_TOLERANCE)


# -- notebook 06: sampling ----------------------------------------------------------------------
HINT_DDPM_STEP = ("mean = (x_t − β_t/√(1 − ᾱ_t)·ε̂)/√α_t, then add √β_t·noise — except at t = 0, where the "
                  "step returns the mean alone (DDPM Algorithm 2). β_t = s.betas[t], α_t = s.alphas[t], "
                  "ᾱ_t = s.alphas_cumprod[t]; cast the coefficients to x_t's dtype.")

HINT_DDIM_STEP = ("x̂_0 = (x_t − √(1 − ᾱ_t)·ε̂)/√ᾱ_t; σ = η·√((1 − ᾱ')/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ') with ᾱ' = "
                  "ᾱ_{t_prev}, or 1 when t_prev = −1; return √ᾱ'·x̂_0 + √(1 − ᾱ' − σ²)·ε̂ + σ·noise.")


def _sampler_cases(with_prev: bool) -> list[Case]:
    settings = [(999, 899, 0.0, "linear"), (500, -1, 0.0, "cosine"), (10, 9, 1.0, "linear"), (700, 300, 0.5, "cosine"),
                (1, 0, 0.0, "linear"), (0, -1, 0.0, "cosine")]
    cases = []
    for seed, (t, t_prev, eta, kind) in enumerate(settings):
        g = torch.Generator().manual_seed(seed)
        x_t, eps, noise = (torch.randn(3, 1, 6, 6, generator=g) for _ in range(3))
        s = schedules.make_schedule(kind, 1000)
        if with_prev:
            inputs = dict(x_t=x_t, eps=eps, t=t, t_prev=t_prev, schedule=s, eta=eta, noise=noise)
        else:
            inputs = dict(x_t=x_t, eps=eps, t=t, schedule=s, noise=noise)
        cases.append(Case(describe(**inputs), tuple(inputs.values())))
    return cases


def check_ddpm_step(fn: Callable) -> Callable:
    """Check ``fn(x_t, eps, t, s, noise) -> x_{t-1}`` against ``minidiff.ddpm_step`` (variance β_t, no clipping)."""
    from ..samplers import ddpm_step

    def reference(x_t: Tensor, eps: Tensor, t: int, s: schedules.NoiseSchedule, noise: Tensor) -> Tensor:
        return ddpm_step(x_t, eps, t, s, noise=noise)
    return check("ddpm_step", fn, reference, _sampler_cases(with_prev=False), HINT_DDPM_STEP, **IMAGE_TOLERANCE)


def check_ddim_step(fn: Callable) -> Callable:
    """Check ``fn(x_t, eps, t, t_prev, s, eta, noise) -> x_{t_prev}`` against ``minidiff.ddim_step``."""
    from ..samplers import ddim_step

    def reference(x_t: Tensor, eps: Tensor, t: int, t_prev: int, s: schedules.NoiseSchedule, eta: float,
                  noise: Tensor) -> Tensor:
        return ddim_step(x_t, eps, t, t_prev, s, eta=eta, noise=noise)
    return check("ddim_step", fn, reference, _sampler_cases(with_prev=True), HINT_DDIM_STEP, **IMAGE_TOLERANCE)


# -- notebook 07: classifier-free guidance ------------------------------------------------------
HINT_GUIDED_PREDICTION = ("One forward pass: out = model(torch.cat([x_t, x_t]), torch.cat([t, t]), "
                          "torch.cat([y, null])) with null = torch.full_like(y, null_label); cond, uncond = "
                          "out.chunk(2); return uncond + w·(cond − uncond) — w multiplies the difference "
                          "(conditional minus unconditional), and w = 0 must give the unconditional output.")

HINT_DROP_LABELS = ("Draw one uniform number per label (torch.rand(y.shape, device=y.device)); where it is below "
                    "p_uncond put null_label, elsewhere keep y (torch.where). Return a new tensor: each label is "
                    "dropped on its own, not the whole batch at once, and y itself is left unchanged.")

HINT_RESCALED = ("x_cfg = uncond + w·(cond − uncond); σ(·) is each image's standard deviation over all its "
                 "values (x.flatten(1).std(dim=1), reshaped to (B, 1, 1, 1)), not the batch's; "
                 "x_re = x_cfg·σ(cond)/σ(x_cfg); return φ·x_re + (1 − φ)·x_cfg.")


class _TinyConditional(torch.nn.Module):
    """A small deterministic stand-in for a conditional U-Net: a conv plus a per-label offset. It
    records the batch size of every call, so a check can tell one batched pass from two."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.label = torch.nn.Embedding(num_classes + 1, channels)
        self.calls: list[int] = []

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        self.calls.append(x.shape[0])
        return self.conv(x) * (1 + t.float().view(-1, 1, 1, 1) / 1000) + self.label(y)[:, :, None, None]


def check_guided_prediction(fn: Callable) -> Callable:
    """Check ``fn(model, x_t, t, y, null_label, w) -> ε̃`` against ``cfg_mix`` of the conditional and the
    null-label output, and that it calls the model once, on the batch of 2B."""
    from ..guidance import cfg_mix
    cases = []
    with torch.random.fork_rng(devices=[]):
        for seed, (b, c, hw, w) in enumerate([(2, 1, 6, 3.0), (3, 3, 4, 0.0), (4, 1, 8, 1.0), (5, 2, 4, 7.5)]):
            torch.manual_seed(seed)
            model, x_t = _TinyConditional(c, 10), torch.randn(b, c, hw, hw)
            t, y = torch.randint(0, 1000, (b,)), torch.randint(0, 10, (b,))
            inputs = dict(model=model, x_t=x_t, t=t, y=y, null_label=10, w=w)
            cases.append(Case(describe(**inputs), tuple(inputs.values())))

    def reference(model, x_t, t, y, null_label, w):
        both = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null_label)]))
        return cfg_mix(*both.chunk(2), w)

    def one_pass(model, x_t, t, y, null_label, w):
        model.calls.clear()
        out = fn(model, x_t, t, y, null_label, w)
        if model.calls != [2 * len(x_t)]:
            raise ExerciseError(f"guided_prediction called the model {len(model.calls)} time(s), on batches of "
                                f"{model.calls}, for {len(x_t)} images; it should call it once, on the batch of "
                                f"{2 * len(x_t)} (conditional and unconditional together).\n  Hint: {HINT_GUIDED_PREDICTION}")
        return out
    checked = check("guided_prediction", one_pass, reference, cases, HINT_GUIDED_PREDICTION)
    return fn if checked is one_pass else checked


def check_drop_labels(fn: Callable) -> Callable:
    """Check ``fn(y, p_uncond, null_label) -> labels`` (random) by its properties: p = 0 and p = 1, the
    fraction dropped, each label dropped on its own, kept labels unchanged, y itself untouched."""
    from ..guidance import drop_labels

    def reference(y: Tensor, p_uncond: float, null_label: int) -> Tensor:
        return drop_labels(y, p_uncond, null_label)

    y = torch.arange(40_000) % 10

    def same_labels(p: float, expected: Tensor, what: str) -> Callable[[Callable], Optional[str]]:
        def test(f: Callable) -> Optional[str]:
            problem = compare_tensors(expected, f(y.clone(), p, 10), 0, 0)
            return problem and f"with p_uncond={p} {what}: {problem}"
        return test

    def fraction(f: Callable) -> Optional[str]:
        out = f(y.clone(), 0.25, 10)
        if not isinstance(out, Tensor) or out.shape != y.shape or out.dtype != y.dtype:
            return f"expected a {y.dtype} tensor of shape {tuple(y.shape)}; got {getattr(out, 'dtype', type(out).__name__)} {tuple(getattr(out, 'shape', ()))}"
        kept, dropped = out == y, out == 10
        if not bool((kept | dropped).all()):
            return "some labels were changed to something other than the null label 10"
        share = dropped.float().mean().item()
        if not 0.24 <= share <= 0.26:
            whole = " (0 or 1: the whole batch was dropped at once?)" if share in (0.0, 1.0) else ""
            return f"with p_uncond=0.25, {share:.1%} of 40,000 labels were dropped{whole}; expected about 25%"
        per_class = [dropped[y == k].float().mean().item() for k in range(10)]
        if max(per_class) - min(per_class) > 0.04:
            return f"the share dropped differs by class ({min(per_class):.1%} to {max(per_class):.1%}); every label should be dropped with the same probability"
        return None

    def independent(f: Callable) -> Optional[str]:
        a, b = f(y.clone(), 0.5, 10), f(y.clone(), 0.5, 10)
        return "two calls dropped exactly the same labels: draw fresh random numbers each call" if torch.equal(a, b) else None

    def untouched(f: Callable) -> Optional[str]:
        labels = y.clone()
        f(labels, 0.5, 10)
        return "y itself was modified (in place); return a new tensor and leave y as it was" if not torch.equal(labels, y) else None

    properties = [("p_uncond=0 keeps every label", same_labels(0.0, y, "every label should be kept")),
                  ("p_uncond=1 drops every label", same_labels(1.0, torch.full_like(y, 10), "every label should be the null label")),
                  ("p_uncond=0.25 drops about a quarter of the labels, each on its own", fraction),
                  ("each call draws anew", independent),
                  ("y itself is left unchanged", untouched)]
    return check_properties("drop_labels", fn, reference, properties, HINT_DROP_LABELS)


def check_rescaled_guidance(fn: Callable) -> Callable:
    """Check ``fn(cond, uncond, w, phi) -> guided`` against ``guidance.Rescaled(w, phi)`` (Lin et al. 2024)."""
    from ..guidance import Rescaled
    settings = [((2, 1, 8, 8), 3.0, 0.7), ((3, 3, 4, 4), 7.5, 1.0), ((2, 1, 6, 6), 5.0, 0.0), ((4, 2, 4, 4), 1.0, 0.5)]
    cases = []
    for seed, (shape, w, phi) in enumerate(settings):
        g = torch.Generator().manual_seed(seed)
        scale = torch.logspace(-1, 1, shape[0]).view(-1, 1, 1, 1)        # images of very different spread
        cond, uncond = scale * torch.randn(shape, generator=g), scale * torch.randn(shape, generator=g)
        inputs = dict(cond=cond, uncond=uncond, w=w, phi=phi)
        cases.append(Case(describe(**inputs), tuple(inputs.values())))

    def reference(cond: Tensor, uncond: Tensor, w: float, phi: float) -> Tensor:
        return Rescaled(w, phi)(cond, uncond, 0, cond)
    return check("rescaled_guidance", fn, reference, cases, HINT_RESCALED)


# -- notebook 08: the autoencoder of latent diffusion ---------------------------------------------
HINT_REPARAMETERISE = ("z = μ + exp(½·logvar)·ε: σ = exp(½·log σ²) is the square root of the variance — "
                       "exp(logvar) would be σ² itself. Use the noise you are given (do not draw your own, and "
                       "do not leave it out: z = μ is the mean, not a sample), and build z from mean and logvar "
                       "with torch operations so that gradients reach both (no .detach(), torch.no_grad or .item()).")

HINT_KL = ("KL = ½ Σ (μ² + σ² − 1 − log σ²) with σ² = exp(logvar) and log σ² = logvar itself: keep the ½, the sign "
           "is minus log σ², and it is σ² (exp(logvar)), not σ (exp(½·logvar)). *Sum* over every latent element of "
           "each image (C·H·W: .flatten(1).sum(dim=1)), not the mean, and not over the batch: return shape (B,).")


def check_reparameterise(fn: Callable) -> Callable:
    """Check ``fn(mean, logvar, noise) -> z`` against ``nn.autoencoder.reparameterise`` with the same ε, and
    that gradients reach mean and logvar."""
    from ..nn.autoencoder import reparameterise
    settings = [((2, 4, 8, 8), None, ""), ((3, 4, 4, 4), None, ""), ((1, 2, 16, 16), None, ""),
                ((2, 4, 4, 4), 0.0, " (logvar = 0: σ = 1, so z = μ + ε)"),
                ((2, 3, 4, 4), -60.0, " (logvar = −60: σ ≈ 1e-13, so z ≈ μ)")]
    cases = []
    for seed, (shape, fixed, note) in enumerate(settings):
        g = torch.Generator().manual_seed(seed)
        mean, noise = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        logvar = torch.full(shape, fixed) if fixed is not None else 4 * torch.rand(shape, generator=g) - 3
        inputs = dict(mean=mean, logvar=logvar, noise=noise)
        cases.append(Case(describe(**inputs) + note, tuple(inputs.values())))

    def reference(mean: Tensor, logvar: Tensor, noise: Tensor) -> Tensor:
        return reparameterise(mean, logvar, noise)

    def with_gradients(mean: Tensor, logvar: Tensor, noise: Tensor) -> Any:
        """``fn``'s z; when its values are right, also that z.sum() has a gradient for mean and for logvar."""
        leaves = mean.clone().requires_grad_(True), logvar.clone().requires_grad_(True)
        z = fn(*leaves, noise)
        if not isinstance(z, Tensor) or compare_tensors(reference(mean, logvar, noise), z.detach(), 1e-5, 1e-4):
            return z.detach() if isinstance(z, Tensor) else z          # wrong values: ``check`` explains them
        missing = [name for name, leaf in zip(("mean", "logvar"), leaves) if _gradient(z, leaf) is None]
        if missing:
            raise ExerciseError(f"reparameterise gives the right values, but no gradient reaches "
                                f"{' or '.join(missing)}: z must be computed from them with torch operations, so "
                                f"that training can move the encoder's outputs.\n  Hint: {HINT_REPARAMETERISE}")
        return z.detach()
    checked = check("reparameterise", with_gradients, reference, cases, HINT_REPARAMETERISE)
    return fn if checked is with_gradients else checked


def _gradient(z: Tensor, leaf: Tensor) -> Optional[Tensor]:
    """∂(Σ z)/∂leaf, or None when z does not depend on ``leaf`` through autograd."""
    if not z.requires_grad:
        return None
    return torch.autograd.grad(z.sum(), leaf, retain_graph=True, allow_unused=True)[0]


def check_kl_divergence(fn: Callable) -> Callable:
    """Check ``fn(mean, logvar) -> (B,)``, the KL divergence to N(0, I) per image, against
    ``nn.autoencoder.kl_divergence``: zero at the standard normal, two closed-form values, random latents."""
    from ..nn.autoencoder import kl_divergence
    log4 = torch.log(torch.tensor(4.0)).item()
    settings = [((2, 4, 8, 8), 0.0, 0.0, " (μ = 0, σ² = 1: the standard normal itself, KL = 0)"),
                ((3, 2, 4, 4), 1.0, 0.0, " (μ = 1, σ² = 1: KL = ½·μ²·C·H·W = 16 per image)"),
                ((2, 1, 4, 4), 0.0, log4,
                 f" (μ = 0, σ² = 4: KL = ½·(4 − 1 − log 4)·16 = {8 * (3 - log4):.4g} per image)"),
                ((4, 4, 8, 8), None, None, ""), ((2, 8, 16, 16), None, None, "")]
    cases = []
    for seed, (shape, mu, logvar, note) in enumerate(settings):
        g = torch.Generator().manual_seed(seed)
        mean = torch.full(shape, mu) if mu is not None else torch.randn(shape, generator=g)
        lv = torch.full(shape, logvar) if logvar is not None else 4 * torch.rand(shape, generator=g) - 3
        cases.append(Case(describe(mean=mean, logvar=lv) + note, (mean, lv)))
    return check("kl_divergence", fn, kl_divergence, cases, HINT_KL, atol=1e-4, rtol=1e-4)
