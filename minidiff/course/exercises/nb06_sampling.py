"""Notebook 06's exercises: one DDPM step, one DDIM step, the whole DDIM sampling loop, and one DPM-Solver++(2M) step.

Every `t` here is a position (the course's notation, notebook 01): position t is step t + 1, so
s.betas[t] is β_{t+1} and s.alphas_cumprod[t] is ᾱ_{t+1}; position −1 is step 0, x_0 itself (ᾱ_0 = 1)."""
from __future__ import annotations

import random
from typing import Callable, Optional

import torch
from torch import Tensor

from ... import schedules
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
    check,
    describe,
    hidden_rng,
    register,
    t_labels,
    torch_seed,
)

__all__ = ["HINT_DDIM_LOOP", "HINT_DDIM_STEP", "HINT_DDPM_STEP", "HINT_DPM_SOLVER_STEP", "check_ddim_loop",
           "check_ddim_step", "check_ddpm_step", "check_dpm_solver_step"]   # what mc.exercises exports from here


HINT_DDPM_STEP = ("t is a position, step t + 1: with β = s.betas[t], α = s.alphas[t] and ᾱ = s.alphas_cumprod[t] "
                  "(all of step t + 1), mean = (x_t − β/√(1 − ᾱ)·eps)/√α, then add √β·noise — except at position "
                  "0 (the paper's last step, t = 1), which returns the mean alone (DDPM Algorithm 2). "
                  "md.extract(table, t, x_t) casts a table's entry to x_t's dtype.")

HINT_DDIM_STEP = ("t and t_prev are positions: ᾱ = s.alphas_cumprod[t] (step t + 1) and ᾱ' = s.alphas_cumprod[t_prev], "
                  "or 1 when t_prev = −1 (step 0, x_0 itself: ᾱ_0 = 1). x̂_0 = (x_t − √(1 − ᾱ)·eps)/√ᾱ; "
                  "σ = eta·√((1 − ᾱ')/(1 − ᾱ))·√(1 − ᾱ/ᾱ'); return √ᾱ'·x̂_0 + √(1 − ᾱ' − σ²)·eps + σ·noise.")


def _kind(rng: random.Random) -> str:
    return rng.choice(("linear", "cosine", "sigmoid"))


def _hidden_step_settings(rng: random.Random) -> list[tuple]:
    """Drawn (t, t_prev, eta, schedule): from near the end straight to position 0 with some η, a step to x_0
    (t_prev = −1) with η = 1 from early on, the whole way from T − 1 to x_0, and one position back early on."""
    early = rng.randint(2, 10)
    return [(rng.randint(990, 998), 0, round(rng.uniform(0.1, 0.9), 2), _kind(rng)),
            (rng.randint(1, 5), -1, 1.0, _kind(rng)), (999, -1, 0.0, _kind(rng)), (early, early - 1, 0.0, _kind(rng))]


def _sampler_cases(with_prev: bool, hidden: bool = False) -> list[Case]:
    if hidden:
        rng = hidden_rng("sampler_cases")
        settings, shape, first_seed = _hidden_step_settings(rng), (2, 3, 5, 5), torch_seed(rng)
    else:
        settings = [(999, 899, 0.0, "linear"), (500, -1, 0.0, "cosine"), (10, 9, 1.0, "linear"),
                    (700, 300, 0.5, "cosine"), (1, 0, 0.0, "linear"), (0, -1, 0.0, "cosine")]
        shape, first_seed = (3, 1, 6, 6), 0
    cases = []
    for seed, (t, t_prev, eta, kind) in enumerate(settings, start=first_seed):
        g = torch.Generator().manual_seed(seed)
        x_t, eps, noise = (torch.randn(shape, generator=g) for _ in range(3))
        s = schedules.make_schedule(kind, 1000)
        if with_prev:
            inputs = dict(x_t=x_t, eps=eps, t=t, t_prev=t_prev, schedule=s, eta=eta, noise=noise)
        else:
            inputs = dict(x_t=x_t, eps=eps, t=t, schedule=s, noise=noise)
        cases.append(Case(describe(**inputs), tuple(inputs.values()), batch_labels=t_labels(t, shape[0])))
    return cases


def check_ddpm_step(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(x_t, eps, t, s, noise) -> x_{t-1}`` against ``minidiff.ddpm_step`` (variance β_t, no clipping)."""
    return check("ddpm_step", fn, _reference_ddpm_step, _sampler_cases(with_prev=False, hidden=hidden),
                 _first_hint("ddpm_step"), **IMAGE_TOLERANCE, hidden=hidden)


def _reference_ddpm_step(x_t: Tensor, eps: Tensor, t: int, s: schedules.NoiseSchedule, noise: Tensor) -> Tensor:
    from ...samplers import ddpm_step
    return ddpm_step(x_t, eps, t, s, noise=noise)


def check_ddim_step(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(x_t, eps, t, t_prev, s, eta, noise) -> x_{t_prev}`` against ``minidiff.ddim_step``."""
    return check("ddim_step", fn, _reference_ddim_step, _sampler_cases(with_prev=True, hidden=hidden),
                 _first_hint("ddim_step"), **IMAGE_TOLERANCE, hidden=hidden)


def _reference_ddim_step(x_t: Tensor, eps: Tensor, t: int, t_prev: int, s: schedules.NoiseSchedule, eta: float,
                         noise: Tensor) -> Tensor:
    from ...samplers import ddim_step
    return ddim_step(x_t, eps, t, t_prev, s, eta=eta, noise=noise)


def _ddpm_with(noise_at_0: bool = False, no_noise: bool = False, divide_by: Callable = _ALPHA,
               eps_root: bool = True, sigma: Callable = lambda s, t, x: _at(s.betas, t, x).sqrt()) -> Callable:
    def wrong(x_t: Tensor, eps: Tensor, t: int, s: schedules.NoiseSchedule, noise: Tensor) -> Tensor:
        beta, one_minus = _BETA(s, t, x_t), 1 - _ABAR(s, t, x_t)
        mean = (x_t - beta / (one_minus.sqrt() if eps_root else one_minus) * eps) / divide_by(s, t, x_t).sqrt()
        if no_noise or (t == 0 and not noise_at_0):
            return mean
        return mean + sigma(s, t, x_t) * noise
    return wrong


DDPM_STEP_MISTAKES = (
    Mistake("noise was added at position 0 too; that is the paper's last step (t = 1), which returns the mean "
            "alone (DDPM Algorithm 2)",
            _ddpm_with(noise_at_0=True)),
    Mistake("no noise was added: at every position t > 0 the step adds √β·noise to the mean, β = s.betas[t]",
            _ddpm_with(no_noise=True)),
    Mistake("the mean divides by √ᾱ (s.alphas_cumprod[t]); it divides by √α = s.alphas[t].sqrt()",
            _ddpm_with(divide_by=_ABAR)),
    Mistake("eps's coefficient is β/(1 − ᾱ); it is β/√(1 − ᾱ)", _ddpm_with(eps_root=False)),
    Mistake("the noise is scaled by β; it is scaled by √β = s.betas[t].sqrt()", _ddpm_with(sigma=_BETA)),
    Mistake("the noise is scaled by the posterior's √β̃ (s.posterior_variance); this step uses √β",
            _ddpm_with(sigma=lambda s, t, x: _at(s.posterior_variance, t, x).sqrt())),
)


def _ddim_with(prev_at_minus_one: Optional[Callable] = None, table: str = "alphas_cumprod", use_eta: bool = True,
               add_noise: bool = True, minus_sigma2: bool = True) -> Callable:
    def wrong(x_t: Tensor, eps: Tensor, t: int, t_prev: int, s: schedules.NoiseSchedule, eta: float,
              noise: Tensor) -> Tensor:
        abar = getattr(s, table)
        abar_t = _at(abar, t, x_t)
        if t_prev >= 0:
            abar_prev = _at(abar, t_prev, x_t)
        else:
            abar_prev = torch.ones_like(abar_t) if prev_at_minus_one is None else prev_at_minus_one(abar, x_t)
        x0 = (x_t - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()
        sigma = (eta if use_eta else 0.0) * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).sqrt()
        rest = (1 - abar_prev - (sigma ** 2 if minus_sigma2 else 0)).clamp(min=0).sqrt()
        return abar_prev.sqrt() * x0 + rest * eps + (sigma * noise if add_noise else 0)
    return wrong


DDIM_STEP_MISTAKES = (
    Mistake("at t_prev = −1 you indexed s.alphas_cumprod[−1], the last position (step T); position −1 is step 0, "
            "where ᾱ' = ᾱ_0 = 1 (the clean image)",
            _ddim_with(prev_at_minus_one=lambda abar, x: _at(abar, -1, x))),
    Mistake("at t_prev = −1 you used s.alphas_cumprod[0], the ᾱ of step 1; position −1 is step 0, where "
            "ᾱ' = ᾱ_0 = 1 (the clean image)",
            _ddim_with(prev_at_minus_one=lambda abar, x: _at(abar, 0, x))),
    Mistake("eta was ignored: σ = eta·√((1 − ᾱ')/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ')", _ddim_with(use_eta=False)),
    Mistake("the fresh-noise term σ·noise is missing", _ddim_with(add_noise=False)),
    Mistake("eps's coefficient lacks the − σ²: it is √(1 − ᾱ' − σ²)", _ddim_with(minus_sigma2=False)),
    Mistake("you used s.alphas (α) where DDIM uses ᾱ = s.alphas_cumprod", _ddim_with(table="alphas")),
)


register(
    Exercise("ddpm_step", "ddpm_step", _reference_ddpm_step, (
        "Take the model's predicted noise out of x_t to get the mean of the next, less noisy image, then add "
        "fresh noise of this step's size — at every position but 0 (the paper's last step, t = 1), which "
        "returns the mean alone.",
        HINT_DDPM_STEP,
        "beta_t, alpha_t = md.extract(s.betas, t, x_t), md.extract(s.alphas, t, x_t); mean = (x_t − beta_t / "
        "md.extract(s.sqrt_one_minus_alphas_cumprod, t, x_t) * eps) / alpha_t.sqrt(); at t == 0 return mean, "
        "else mean + beta_t.sqrt() * noise."),
        DDPM_STEP_MISTAKES, ("minidiff.samplers.ddpm_step",)),
    Exercise("ddim_step", "ddim_step", _reference_ddim_step, (
        "Predict the clean image x̂_0 from x_t and eps, then re-noise it to the level of position t_prev: part of "
        "the rest is the predicted noise, part (σ, set by eta) fresh noise. t_prev = −1 is step 0, the clean "
        "image itself.",
        HINT_DDIM_STEP,
        "abar_t = md.extract(s.alphas_cumprod, t, x_t); abar_prev likewise at t_prev, or torch.ones_like(abar_t) "
        "when t_prev < 0; x0_hat = (x_t − (1 − abar_t).sqrt() * eps) / abar_t.sqrt(); sigma from eta; return "
        "abar_prev.sqrt() * x0_hat + (1 − abar_prev − sigma**2).clamp(min=0).sqrt() * eps + sigma * noise."),
        DDIM_STEP_MISTAKES, ("minidiff.samplers.ddim_step",)),
)


# -- the whole DDIM loop --------------------------------------------------------------------------
HINT_DDIM_LOOP = ("The positions, largest first: ts = [round(T − i·T/steps) − 1 for i in range(steps)] (\"trailing\": "
                  "the first is T − 1, pure noise). Pair each with the next one visited, and the last with −1 "
                  "(step 0, x_0): zip(ts, ts[1:] + [-1]). At each pair: eps, _ = md.samplers.predict_eps(model, x, "
                  "t, s, y) (it reads the output as the model's target), noise = torch.randn(x.shape, "
                  "generator=generator), x = ddim_step(x, eps, t, t_prev, s, eta, noise).")


class _TinyNet(torch.nn.Module):
    """A fixed, seeded stand-in for a trained network: deterministic, cheap, conditional, predicting ``target``."""

    description = "a small fixed stand-in for a trained conditional network"

    def __init__(self, target: str, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.nn.Parameter(0.3 * torch.randn(1, 1, 3, 3, generator=g), requires_grad=False)
        self.label_shift = torch.nn.Parameter(0.2 * torch.randn(11, generator=g), requires_grad=False)
        self.target, self.null_label = target, 10

    def forward(self, x: Tensor, t: Tensor, y: Optional[Tensor] = None) -> Tensor:
        c = x.shape[1]
        out = torch.tanh(torch.nn.functional.conv2d(x, self.weight.expand(c, 1, 3, 3), padding=1, groups=c))
        out = out + (t.to(x.dtype) / 1000).reshape(-1, 1, 1, 1)
        return out if y is None else out + self.label_shift[y].reshape(-1, 1, 1, 1)

    def __repr__(self) -> str:
        return f"a fixed small network predicting {self.target}"


def _hidden_loop_settings(rng: random.Random) -> list[tuple]:
    """Drawn (model, schedule, T, steps, eta, labels?): a v-, an ε- and an x₀-network (on the linear schedule) and
    the toy's exact ε (linear or sigmoid), in a drawn order, with η = 0, η = 1 and one in between among them."""
    etas = [0.0, 1.0, round(rng.uniform(0.2, 0.8), 2), 0.0]
    rng.shuffle(etas)
    settings = [(model, rng.choice(("linear", "sigmoid")) if model == "toy" else "linear",    # not cosine: its
                 rng.randint(100, 300) if model == "toy" else 1000, rng.randint(2, 9), eta,   # ᾱ ≈ 0 at the end
                 model != "toy" and rng.random() < 0.5)         # makes float32 answers differ beyond the tolerance
                for model, eta in zip(("v", "eps", "toy", "x0"), etas)]
    rng.shuffle(settings)
    return settings


def _loop_cases(hidden: bool = False) -> list[Case]:
    """(model, schedule, steps, eta, labels?) settings; the toy mixture's ideal ε-model among them."""
    from ...scores import GaussianMixture
    if hidden:
        rng = hidden_rng("loop_cases")
        settings, first_seed = _hidden_loop_settings(rng), torch_seed(rng)
    else:
        settings = [("toy", "linear", 1000, 10, 0.0, False), ("v", "linear", 1000, 4, 0.0, True),
                    ("eps", "cosine", 1000, 7, 0.5, True), ("v", "linear", 100, 3, 1.0, False),
                    ("eps", "linear", 1000, 1, 0.0, False)]
        first_seed = 0
    cases = []
    for seed, (kind, schedule, num_steps, steps, eta, labelled) in enumerate(settings, start=first_seed):
        g = torch.Generator().manual_seed(seed)
        x_T = torch.randn(3, 1, 5, 5, generator=g)
        model = GaussianMixture().eps_model(schedules.make_schedule(schedule, num_steps)) if kind == "toy" \
            else _TinyNet(kind, seed)
        s = schedules.make_schedule(schedule, num_steps)
        y = torch.tensor([seed % 10, 3, 10]) if labelled else None
        generator = torch.Generator().manual_seed(1000 + seed)
        what = "the toy mixture's ideal ε-model" if kind == "toy" else f"a small network predicting {kind}"
        description = (f"model={what}, schedule={schedule} (T={num_steps}), x_T shape {tuple(x_T.shape)}, "
                       f"steps={steps}, eta={eta}, y={'tensor(' + str(y.tolist()) + ')' if labelled else None}")
        cases.append(Case(description, (model, s, x_T, steps, eta, y, generator)))
    return cases


def check_ddim_loop(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(model, s, x_T, steps, eta, y, generator) -> x_0`` against ``minidiff.ddim_sample`` (trailing
    spacing, the model's own target, noise drawn from ``generator`` at every step)."""
    return check("ddim_loop", fn, _reference_ddim_loop, _loop_cases(hidden), _first_hint("ddim_loop"),
                 **IMAGE_TOLERANCE, hidden=hidden)


def _reference_ddim_loop(model: Callable, s: schedules.NoiseSchedule, x_T: Tensor, steps: int, eta: float = 0.0,
                         y: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> Tensor:
    from ...samplers import ddim_sample
    with torch.no_grad():
        return ddim_sample(model, s, tuple(x_T.shape), steps=steps, eta=eta, y=y, generator=generator, x_T=x_T)


def _loop_with(spacing: str = "trailing", last: Optional[int] = -1, raw_output: bool = False,
               use_eta: bool = True, use_y: bool = True) -> Callable:
    """The DDIM loop with one mistake; ``last=None`` stops at the last visited position (no step to x_0)."""
    def wrong(model: Callable, s: schedules.NoiseSchedule, x_T: Tensor, steps: int, eta: float = 0.0,
              y: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> Tensor:
        from ...samplers import ddim_step, predict_eps
        T = s.num_steps
        if spacing == "leading":
            ts = [i * (T // steps) for i in reversed(range(steps))]
        else:
            ts = [round(T - i * T / steps) - 1 for i in range(steps)]
        pairs = list(zip(ts, ts[1:] + [last])) if last is not None else list(zip(ts[:-1], ts[1:]))
        x = x_T
        with torch.no_grad():
            for t, t_prev in pairs:
                if raw_output:
                    eps = (model(x, torch.full((x.shape[0],), t), y) if y is not None
                           else model(x, torch.full((x.shape[0],), t)))
                else:
                    eps, _ = predict_eps(model, x, t, s, y if use_y else None)
                noise = torch.randn(x.shape, generator=generator)
                x = ddim_step(x, eps, t, t_prev, s, eta if use_eta else 0.0, noise)
        return x
    return wrong


DDIM_LOOP_MISTAKES = (
    Mistake("the positions are \"leading\" (0, T/steps, …): the first step then starts below T − 1, from noise the "
            "model takes for a partly clean image; trailing spacing starts at T − 1", _loop_with(spacing="leading")),
    Mistake("the loop stops at the last visited position, one step short of x_0: pair the last position with "
            "t_prev = −1 (step 0, ᾱ_0 = 1)", _loop_with(last=None)),
    Mistake("the model's raw output was used as eps; a model that predicts v or x_0 (model.target) must be "
            "converted: md.samplers.predict_eps(model, x, t, s, y) does it", _loop_with(raw_output=True)),
    Mistake("eta was not passed on to the step (every step ran deterministically)", _loop_with(use_eta=False)),
    Mistake("the labels y were not passed to the model", _loop_with(use_y=False)),
)


register(
    Exercise("ddim_loop", "ddim_loop", _reference_ddim_loop, (
        "Visit `steps` positions from T − 1 (pure noise) down, evenly spaced, and take one DDIM step from each to "
        "the next one visited; the last step goes to position −1, the clean image.",
        HINT_DDIM_LOOP,
        "ts = [round(T - i * T / steps) - 1 for i in range(steps)]; x = x_T; for t, t_prev in zip(ts, ts[1:] + "
        "[-1]): eps, _ = md.samplers.predict_eps(model, x, t, s, y); x = ddim_step(x, eps, t, t_prev, s, eta, "
        "torch.randn(x.shape, generator=generator)); return x."),
        DDIM_LOOP_MISTAKES, ("minidiff.samplers.ddim_sample", "minidiff.samplers.ddim_timesteps"),
        depends_on=("ddim_step",)),
)


# -- one DPM-Solver++(2M) step ---------------------------------------------------------------------
HINT_DPM_SOLVER_STEP = ("t, t_next and t_last are positions (step k = t + 1, step j = t_next + 1). At t_next = −1 "
                        "(step 0, σ = 0) return x0. Otherwise λ = ½·s.log_snr (λ = log(α/σ), half the log SNR), "
                        "h = λ[t_next] − λ[t]; x_next = (σ[t_next]/σ[t])·x_t − α[t_next]·(e^{−h} − 1)·D with "
                        "α = s.sqrt_alphas_cumprod, σ = s.sqrt_one_minus_alphas_cumprod and D = x0, or, given "
                        "x0_last from t_last, r = (λ[t] − λ[t_last])/h and D = (1 + 1/(2r))·x0 − 1/(2r)·x0_last. "
                        "torch.expm1(−h) is e^{−h} − 1; cast coefficients to x_t's dtype.")


def _hidden_dpm_settings(rng: random.Random) -> list[tuple]:
    """Drawn (t, t_next, t_last, schedule): second-order steps late, midway and early (the gaps drawn apart, so
    r ≠ 1), a first-order step from T − 1, and a second-order step to x_0 (t_next = −1)."""
    def second(low: int, high: int, t_next: Optional[int] = None) -> tuple:
        t = rng.randint(low, high)
        back = t_next if t_next is not None else t - rng.randint(10, min(t, 300))
        return (t, back, min(999, t + rng.randint(10, 250)), _kind(rng))
    return [second(700, 960), second(300, 699), (999, 999 - rng.randint(50, 300), None, _kind(rng)),
            second(50, 150, t_next=-1), second(15, 40)]


def _dpm_cases(hidden: bool = False) -> list[Case]:
    """(t, t_next, t_last or None, schedule): first order, second order, the last step to x_0, and λ spaced
    unevenly (r ≠ 1, so an inverted r shows), on three schedules whose SNR never reaches zero."""
    if hidden:
        rng = hidden_rng("dpm_cases")
        settings, shape, first_seed = _hidden_dpm_settings(rng), (2, 3, 5, 5), torch_seed(rng)
    else:
        settings = [(999, 949, None, "linear"), (899, 799, 999, "linear"), (599, 299, 799, "cosine"),
                    (49, -1, 99, "linear"), (699, 599, None, "cosine"), (199, 99, 249, "sigmoid")]
        shape, first_seed = (3, 1, 6, 6), 0
    cases = []
    for seed, (t, t_next, t_last, kind) in enumerate(settings, start=first_seed):
        g = torch.Generator().manual_seed(seed)
        x_t, x0, x0_last = torch.randn(shape, generator=g), torch.randn(shape, generator=g).clamp(-1, 1), \
            torch.randn(shape, generator=g).clamp(-1, 1)
        s = schedules.make_schedule(kind, 1000)
        last = dict(x0_last=x0_last, t_last=t_last) if t_last is not None else dict(x0_last=None, t_last=None)
        inputs = dict(x_t=x_t, x0=x0, t=t, t_next=t_next, schedule=s, **last)
        cases.append(Case(describe(**inputs), tuple(inputs.values()), batch_labels=t_labels(t, shape[0])))
    return cases


def check_dpm_solver_step(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(x_t, x0, t, t_next, s, x0_last=None, t_last=None) -> x_{t_next}`` against
    ``minidiff.dpm_solver_step`` (DPM-Solver++(2M), Lu et al. 2022, Algorithm 2)."""
    return check("dpm_solver_step", fn, _reference_dpm_solver_step, _dpm_cases(hidden),
                 _first_hint("dpm_solver_step"), **IMAGE_TOLERANCE, hidden=hidden)


def _reference_dpm_solver_step(x_t: Tensor, x0: Tensor, t: int, t_next: int, s: schedules.NoiseSchedule,
                               x0_last: Optional[Tensor] = None, t_last: Optional[int] = None) -> Tensor:
    from ...samplers import dpm_solver_step
    return dpm_solver_step(x_t, x0, t, t_next, s, x0_last, t_last)


def _dpm_with(lam_scale: float = 0.5, ratio_inverted: bool = False, factor: Callable = torch.expm1,
              r_of: Callable = lambda h_last, h: h_last / h, first_order: bool = False, swapped: bool = False,
              alpha_at_t: bool = False, minus_one_as_index: bool = False) -> Callable:
    """The DPM-Solver++(2M) step with one mistake. ``factor(−h)`` stands for e^{−h} − 1."""
    def wrong(x_t: Tensor, x0: Tensor, t: int, t_next: int, s: schedules.NoiseSchedule,
              x0_last: Optional[Tensor] = None, t_last: Optional[int] = None) -> Tensor:
        if t_next == -1 and not minus_one_as_index:
            return x0
        lam = lam_scale * s.log_snr
        sigma = s.sqrt_one_minus_alphas_cumprod
        h = lam[t_next] - lam[t]
        ratio = sigma[t] / sigma[t_next] if ratio_inverted else sigma[t_next] / sigma[t]
        alpha = s.sqrt_alphas_cumprod[t if alpha_at_t else t_next]
        d = x0
        if x0_last is not None and not first_order:
            r = r_of(lam[t] - lam[t_last], h)
            new, old = (x0_last, x0) if swapped else (x0, x0_last)
            d = (1 + 1 / (2 * r)) * new - (1 / (2 * r)) * old
        return ratio.to(x_t.dtype) * x_t - (alpha * factor(-h)).to(x_t.dtype) * d
    return wrong


DPM_SOLVER_STEP_MISTAKES = (
    Mistake("λ was taken as the log SNR, s.log_snr; λ = log(α/σ) is half of it, λ = ½·s.log_snr",
            _dpm_with(lam_scale=1.0)),
    Mistake("the σ ratio is inverted: x_t's coefficient is σ[t_next]/σ[t] (σ = s.sqrt_one_minus_alphas_cumprod), "
            "less than 1 as the noise falls", _dpm_with(ratio_inverted=True)),
    Mistake("the factor is e^{h} − 1; with h = λ[t_next] − λ[t] > 0 it is e^{−h} − 1 = torch.expm1(−h)",
            _dpm_with(factor=lambda minus_h: torch.expm1(-minus_h))),
    Mistake("the factor is −h, the first-order Taylor term of e^{−h} − 1; the exact integral is e^{−h} − 1 "
            "= torch.expm1(−h)", _dpm_with(factor=lambda minus_h: minus_h)),
    Mistake("r is inverted: r = h_last/h, with h_last = λ[t] − λ[t_last] the previous step's length in λ",
            _dpm_with(r_of=lambda h_last, h: h / h_last)),
    Mistake("r has the wrong sign: h_last = λ[t] − λ[t_last] (λ grows as the noise falls, so it is positive like h)",
            _dpm_with(r_of=lambda h_last, h: -h_last / h)),
    Mistake("x0_last was ignored: given the previous step's x̂_0 (x0_last, from t_last), D = (1 + 1/(2r))·x0 − "
            "1/(2r)·x0_last, the second-order step", _dpm_with(first_order=True)),
    Mistake("the weights of x0 and x0_last are swapped: D = (1 + 1/(2r))·x0 − 1/(2r)·x0_last extrapolates past the "
            "newer x̂_0, x0", _dpm_with(swapped=True)),
    Mistake("α is that of the current step, s.sqrt_alphas_cumprod[t]; the update uses the next step's, "
            "α[t_next]", _dpm_with(alpha_at_t=True)),
    Mistake("at t_next = −1 you indexed the tables at −1, the last position (step T); t_next = −1 is step 0, "
            "where σ = 0 and the step returns x0 itself", _dpm_with(minus_one_as_index=True)),
)


register(
    Exercise("dpm_solver_step", "dpm_solver_step", _reference_dpm_solver_step, (
        "Move x_t to the next noise level by solving the probability-flow ODE in λ = log(α/σ): the part linear in "
        "x is integrated exactly (a ratio of σ's), the x̂_0 part is taken constant over the step (first order) or, "
        "when the previous step's x̂_0 is given, extrapolated linearly in λ from the two (second order). "
        "t_next = −1 is step 0, the clean image: return x0.",
        HINT_DPM_SOLVER_STEP,
        "if t_next == -1: return x0; lam = 0.5 * s.log_snr; h = lam[t_next] - lam[t]; sigma = "
        "s.sqrt_one_minus_alphas_cumprod; D = x0, or with x0_last: r = (lam[t] - lam[t_last]) / h; D = (1 + 1/(2*r)) "
        "* x0 - 1/(2*r) * x0_last; return (sigma[t_next] / sigma[t]).to(x_t.dtype) * x_t - "
        "(s.sqrt_alphas_cumprod[t_next] * torch.expm1(-h)).to(x_t.dtype) * D."),
        DPM_SOLVER_STEP_MISTAKES, ("minidiff.samplers.dpm_solver_step", "minidiff.samplers.dpm_solver_sample")),
)
