r"""Flow matching (notebook 09): straight paths from data to noise, and the ODE that runs them backwards.

Continuous time $t \in [0, 1]$, $t = 0$ the data and $t = 1$ pure noise (diffusers' and SD3's convention):

    $x_t = (1 - t)\,x_0 + t\,\varepsilon$,   so   $\frac{dx_t}{dt} = \varepsilon - x_0 =: u$.

A network $u_\theta(x_t, t)$ regresses the conditional velocity $u$ (Lipman et al. 2023, Liu et al. 2023);
sampling integrates $dx/dt = u_\theta$ from $t = 1$ down to $t = 0$. The path is the member
$\alpha_t = 1 - t$, $\sigma_t = t$ of the Gaussian family $x_t = \alpha_t x_0 + \sigma_t\varepsilon$ that also
holds the discrete VP schedules of notebooks 01–03 ($\alpha = \sqrt{\bar\alpha}$, $\sigma = \sqrt{1-\bar\alpha}$).

Time enters the network as the float $t$ itself, a tensor of shape (B,); a model is called ``model(x, t)``,
or ``model(x, t, y)`` with labels.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Literal, Optional

import torch
from torch import Tensor, nn

from .conditioning import (
    FLOW_TARGET,
    cfg_mix,
    check_model_labels,
    check_scale,
    drop_labels,
    null_label,
    null_like,
    unwrap,
)
from .progress import progress_bar

Model = Callable[..., Tensor]
Solver = Literal["euler", "heun"]


# -- the path ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlowPath:
    r"""The straight Gaussian path $x_t = \alpha_t x_0 + \sigma_t\varepsilon$ with $\alpha_t = 1 - t$, $\sigma_t = t$,
    $t \in [0, 1]$: the continuous kind of what a ``NoiseSchedule`` is for discrete steps (both answer
    ``alpha_sigma``; the package docstring says how the two fit). ``load_diffusion`` returns one for a flow model."""

    def alpha_sigma(self, t: float) -> tuple[float, float]:
        """(α_t, σ_t) = (1 − t, t)."""
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"t must be in [0, 1] (0: the data, 1: pure noise); got {t!r}")
        return 1.0 - t, float(t)


def _per_image(t: Tensor, x: Tensor) -> Tensor:
    """Times of shape (B,) (or a scalar) viewed as (B, 1, 1, …) to broadcast over images like ``x``."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.reshape(-1, *([1] * (x.ndim - 1))) if t.ndim else t


def flow_interpolate(x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    r"""$x_t = (1 - t)\,x_0 + t\,\varepsilon$ (t of shape (B,) or a float)."""
    t = _per_image(t, x0)
    return (1 - t) * x0 + t * eps


def flow_target(x0: Tensor, eps: Tensor) -> Tensor:
    r"""The conditional velocity $u = \frac{d x_t}{dt} = \varepsilon - x_0$ (the same at every t)."""
    return eps - x0


def velocity_from_v(v: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    r"""A v-prediction (notebook 05) as a flow velocity. On a VP path $x_t = \alpha x_0 + \sigma\varepsilon$ with
    $\alpha^2 + \sigma^2 = 1$ and $v = \alpha\varepsilon - \sigma x_0$, the pair is
    $\varepsilon = \sigma x_t + \alpha v$, $x_0 = \alpha x_t - \sigma v$, so
    $u = \varepsilon - x_0 = (\sigma - \alpha)\,x_t + (\alpha + \sigma)\,v$.
    The straight path's point at the same signal-to-noise ratio is $x_t / (\alpha + \sigma)$, at time
    ``flow_time(alpha, sigma)``. ``alpha``, ``sigma`` broadcast against ``x_t`` (e.g. shape (B, 1, 1, 1))."""
    return (sigma - alpha) * x_t + (alpha + sigma) * v


def flow_time(alpha: Tensor, sigma: Tensor) -> Tensor:
    r"""The straight path's time with the same ratio of signal to noise as $x_t = \alpha x_0 + \sigma\varepsilon$:
    $(1 - t)/t = \alpha/\sigma$, so $t = \sigma / (\alpha + \sigma)$; that path's point is $x_t / (\alpha + \sigma)$."""
    return sigma / (alpha + sigma)


def x0_from_velocity(x_t: Tensor, u: Tensor, t: Tensor) -> Tensor:
    r"""$\hat x_0 = x_t - t\,\hat u$: follow the straight line from $x_t$ back to $t = 0$."""
    return x_t - _per_image(t, x_t) * u


def eps_from_velocity(x_t: Tensor, u: Tensor, t: Tensor) -> Tensor:
    r"""$\hat\varepsilon = x_t + (1 - t)\,\hat u$: the same line forward to $t = 1$."""
    return x_t + (1 - _per_image(t, x_t)) * u


# -- time: sampling it in training, spacing it in sampling -----------------------------------------
def shift_time(t: Tensor, shift: float) -> Tensor:
    r"""SD3's resolution shift (Esser et al. 2024, §5.3.2): $t' = \frac{s\,t}{1 + (s - 1)\,t}$. ``shift`` $s > 1$
    spends more of the steps (or the training) near the noise, where larger images still hold their signal."""
    return shift * t / (1 + (shift - 1) * t)


def flow_timesteps(steps: int, shift: float = 1.0, device: Optional[torch.device] = None) -> Tensor:
    """The ``steps + 1`` times a sampler visits: linspace(1, 0, steps + 1), shifted (``shift_time``)."""
    return shift_time(torch.linspace(1, 0, steps + 1, device=device), shift)


def logit_normal_t(n: int, mean: float = 0.0, std: float = 1.0, generator: Optional[torch.Generator] = None,
                   device: Optional[torch.device] = None) -> Tensor:
    r"""Training times $t = \mathrm{sigmoid}(m + s\,z)$, $z \sim \mathcal N(0, 1)$ (Esser et al. 2024, §3.1):
    denser in the middle of the path, where predicting $u$ is hardest."""
    z = torch.randn(n, generator=generator, device=device)
    return torch.sigmoid(mean + std * z)


# -- training: the loss, as an objective for the Trainer ------------------------------------------
def flow_loss(model: Model, x0: Tensor, eps: Tensor, t: Tensor, y: Optional[Tensor] = None) -> Tensor:
    r"""$\frac1B\sum_b \mathrm{mean}\big((u_\theta(x_{t_b}, t_b, y_b) - (\varepsilon_b - x_{0,b}))^2\big)$ with
    $x_t = (1 - t)\,x_0 + t\,\varepsilon$. Flow matching pairs each image with fresh noise; reflow calls the same
    loss on the pairs $(\hat x_0, \varepsilon)$ that the model's own ODE joins (Liu et al. 2023)."""
    x_t = flow_interpolate(x0, eps, t)
    u = model(x_t, t) if y is None else model(x_t, t, y)
    return (u.float() - flow_target(x0, eps).float()).pow(2).mean()


TIME_SAMPLINGS = ("uniform", "logit_normal")


@dataclass
class FlowConfig:
    """What a flow-matching network learns: how training draws t, and the label drop rate for guidance."""
    time: str = "logit_normal"       # "uniform": t ~ U[0, 1]; "logit_normal": sigmoid(mean + std·z) (SD3)
    mean: float = 0.0                # the logit-normal's location and scale
    std: float = 1.0
    p_uncond: float = 0.1            # label drop rate for classifier-free guidance

    def __post_init__(self) -> None:
        if self.time not in TIME_SAMPLINGS:
            raise ValueError(f"FlowConfig.time must be one of {TIME_SAMPLINGS}; got {self.time!r}")
        if not (isinstance(self.std, (int, float)) and 0 < self.std < math.inf and math.isfinite(self.mean)):
            raise ValueError(f"FlowConfig.mean must be finite and std > 0; got mean {self.mean!r}, std {self.std!r}")
        if not 0.0 <= self.p_uncond <= 1.0:
            raise ValueError(f"FlowConfig.p_uncond must be in [0, 1]; got {self.p_uncond}")


class FlowObjective:
    r"""$L = \frac1B\sum_b \|u_\theta(x_{t_b}, t_b, y_b) - (\varepsilon_b - x_{0,b})\|^2$,
    $x_t = (1 - t)\,x_0 + t\,\varepsilon$, with t drawn as ``FlowConfig.time`` says and labels dropped to the
    null label with probability ``p_uncond``. ``prepare`` tells the model it predicts the velocity
    (``model.target = "u"``), so samplers and loaders know."""

    def __init__(self, config: Optional[FlowConfig] = None, device: object = "cpu"):
        self.config = config or FlowConfig()

    def to(self, device: object) -> "FlowObjective":
        return self

    def describe(self) -> dict:
        return {"kind": "flow", "config": asdict(self.config)}

    def prepare(self, model: nn.Module, data: tuple[Tensor, ...]) -> None:
        inner = unwrap(model)
        if len(data) > 1:
            check_model_labels(inner, data[1], len(data[0]), name="labels")
        if self.config.p_uncond > 0 and len(data) < 2:
            raise ValueError(f"p_uncond = {self.config.p_uncond} drops labels for guidance, but no labels were given")
        own = getattr(inner, "target", None)
        if own not in (None, FLOW_TARGET):
            raise ValueError(f"the model predicts {own!r} (a diffusion target) but a flow objective trains the "
                             f"velocity {FLOW_TARGET!r}; use a fresh model")
        inner.target = FLOW_TARGET

    def example_inputs(self, batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        x0 = batch[0]
        t = torch.zeros(x0.shape[0], device=x0.device)
        return (x0, t) if len(batch) == 1 else (x0, t, batch[1])

    def draw_t(self, n: int, device: torch.device) -> Tensor:
        cfg = self.config
        if cfg.time == "uniform":
            return torch.rand(n, device=device)
        return logit_normal_t(n, cfg.mean, cfg.std, device=device)

    def __call__(self, model: nn.Module, batch: tuple[Tensor, ...]) -> tuple[Tensor, dict[str, Tensor]]:
        x0, y = batch[0], (batch[1] if len(batch) > 1 else None)
        if y is not None and self.config.p_uncond > 0:
            y = drop_labels(y, self.config.p_uncond, null_label(model))
        eps, t = torch.randn_like(x0), self.draw_t(x0.shape[0], x0.device)
        return flow_loss(model, x0, eps, t, y), {}


class ReflowObjective(FlowObjective):
    r"""Reflow (Liu et al. 2023): the flow loss on a fixed coupling instead of fresh noise. The Trainer's
    images hold each pair on the channel axis, ``pack_pairs(x0_hat, eps)``: the sample $\hat x_0$ the
    model's ODE drew from the noise $\varepsilon$, and that noise. Training on these pairs straightens the
    paths, so fewer Euler steps reach the same samples."""

    def example_inputs(self, batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return super().example_inputs((unpack_pairs(batch[0])[0], *batch[1:]))

    def describe(self) -> dict:
        return {"kind": "reflow", "config": asdict(self.config)}

    def __call__(self, model: nn.Module, batch: tuple[Tensor, ...]) -> tuple[Tensor, dict[str, Tensor]]:
        (x0, eps), y = unpack_pairs(batch[0]), (batch[1] if len(batch) > 1 else None)
        if y is not None and self.config.p_uncond > 0:
            y = drop_labels(y, self.config.p_uncond, null_label(model))
        return flow_loss(model, x0, eps, self.draw_t(x0.shape[0], x0.device), y), {}


def pack_pairs(x0: Tensor, eps: Tensor) -> Tensor:
    """Reflow's pairs as one image batch for the Trainer: (B, 2C, H, W), x̂₀ in the first C channels."""
    if x0.shape != eps.shape:
        raise ValueError(f"eps must have the shape of x0, {tuple(x0.shape)}; got {tuple(eps.shape)}")
    return torch.cat([x0, eps], dim=1)


def unpack_pairs(pairs: Tensor) -> tuple[Tensor, Tensor]:
    """``pack_pairs`` undone: (x̂₀, ε)."""
    return pairs.chunk(2, dim=1)


# -- the ODE, one step and the whole way ------------------------------------------------------------
def euler_step(x_t: Tensor, u: Tensor, t: float, t_next: float) -> Tensor:
    r"""$x_{t'} = x_t + (t' - t)\,\hat u$: one Euler step of $dx/dt = u$ from $t$ to $t' < t$."""
    return x_t + (t_next - t) * u


def heun_step(velocity: Callable[[Tensor, float], Tensor], x_t: Tensor, u: Tensor, t: float, t_next: float) -> Tensor:
    r"""Heun's method: an Euler step to $t'$, the velocity there, and the step taken again with the mean of
    the two velocities, $x_{t'} = x_t + (t' - t)\,\tfrac12(\hat u_t + \hat u_{t'})$. At $t' = 0$ it stays
    Euler (the usual last step, and one network call fewer)."""
    x_euler = euler_step(x_t, u, t, t_next)
    if t_next == 0:
        return x_euler
    return x_t + (t_next - t) * 0.5 * (u + velocity(x_euler, t_next))


def _check_sample_args(shape, steps, solver, shift) -> None:
    if not isinstance(shape, (tuple, list, torch.Size)) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ValueError(f"shape must be a tuple of non-negative ints, e.g. (16, 1, 28, 28); got {shape!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1 (network calls with solver='euler'); got {steps!r}")
    if solver not in ("euler", "heun"):
        raise ValueError(f"solver must be 'euler' or 'heun'; got {solver!r}")
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not math.isfinite(shift) or shift <= 0:
        raise ValueError(f"shift must be a finite number > 0 (1: no shift, 3: SD3's); got {shift!r}")


@torch.no_grad()
def flow_sample(model: Model, shape: tuple[int, ...], steps: int = 20, y: Optional[Tensor] = None,
                guidance_scale: Optional[float] = None, solver: Solver = "euler", shift: float = 1.0,
                generator: Optional[torch.Generator] = None, device: Optional[torch.device] = None,
                progress: Optional[bool] = None) -> Tensor:
    r"""Integrate $dx/dt = u_\theta(x, t)$ from $x_1 \sim \mathcal N(0, I)$ at $t = 1$ to $t = 0$ and return $x_0$.

    Times: ``flow_timesteps(steps, shift)``. ``solver="euler"`` costs one network call per step, ``"heun"``
    two (one at the last step). With labels ``y`` and ``guidance_scale`` $w$, classifier-free guidance mixes
    the conditional and the null-label velocities, $\hat u = u_\varnothing + w\,(u_y - u_\varnothing)$ (one
    batched pass for both); ``guidance_scale=None`` calls the model with ``y`` alone. ``progress``: a bar over the
    steps, as every sampler's (``minidiff.progress``)."""
    _check_sample_args(shape, steps, solver, shift)
    own = getattr(unwrap(model), "target", None)
    if own not in (None, FLOW_TARGET):
        raise ValueError(f"this model predicts {own!r}, a diffusion target, not the flow velocity u: sample it with "
                         f"md.ddim_sample or md.dpm_solver_sample")
    device = device if device is not None else _model_device(model)
    if y is not None:
        y = check_model_labels(model, y, shape[0])
    if guidance_scale is not None:
        check_scale(guidance_scale)
        if y is None:
            raise ValueError("guidance_scale needs labels y (guidance mixes the conditional and unconditional "
                             "velocity)")
    x1 = torch.randn(shape, generator=generator, device=device)
    return flow_integrate(model, x1, steps, y, guidance_scale, solver, shift, progress)


@torch.no_grad()
def flow_integrate(model: Model, x1: Tensor, steps: int, y: Optional[Tensor] = None,
                   guidance_scale: Optional[float] = None, solver: Solver = "euler", shift: float = 1.0,
                   progress: Optional[bool] = None) -> Tensor:
    r"""The ODE from a given $x_1$ (the noise) at $t = 1$ to $t = 0$: ``flow_sample`` without the draw, for
    when the noise matters too (reflow's pairs $(\varepsilon, \hat x_0)$). Arguments as ``flow_sample``'s,
    checked there."""
    velocity = _velocity_fn(model, y, guidance_scale)
    x = x1
    times = flow_timesteps(steps, shift).tolist()
    for t, t_next in progress_bar(list(zip(times[:-1], times[1:])), progress, "flow ODE", leave=False):
        u = velocity(x, t)
        x = euler_step(x, u, t, t_next) if solver == "euler" else heun_step(velocity, x, u, t, t_next)
    return x


def _velocity_fn(model: Model, y: Optional[Tensor],
                 guidance_scale: Optional[float]) -> Callable[[Tensor, float], Tensor]:
    """``velocity(x, t)``: the model's $\\hat u$ at one time ``t`` shared by the batch, guided when asked."""
    def velocity(x: Tensor, t: float) -> Tensor:
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)
        if y is None:
            return model(x, t_batch)
        if guidance_scale is None:
            return model(x, t_batch, y)
        both = model(torch.cat([x, x]), torch.cat([t_batch, t_batch]), torch.cat([y, null_like(y, null_label(model))]))
        cond, uncond = both.chunk(2)
        return cfg_mix(cond, uncond, guidance_scale)
    return velocity


def _model_device(model: Model) -> torch.device:
    """Where a module's parameters live (CPU for a plain function): samples are drawn there."""
    try:
        return next(model.parameters()).device          # type: ignore[union-attr]
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def straightness(model: Model, x1: Tensor, steps: int, y: Optional[Tensor] = None) -> float:
    r"""How far the sampler's path is from a straight line (Liu et al. 2023, eq. 6):
    $S = \int_0^1 E\,\|(x_1 - x_0) - \hat u(x_t, t)\|^2\,dt$, here over the ``steps`` Euler steps from ``x1`` (mean
    over the batch and the pixels), $x_0$ the end the ODE reaches. 0 exactly when every path is a line
    followed at constant speed, as a one-step sampler needs."""
    velocity = _velocity_fn(model, y, None)
    x, times, us = x1, flow_timesteps(steps).tolist(), []
    with torch.no_grad():
        for t, t_next in zip(times[:-1], times[1:]):
            u = velocity(x, t)
            us.append((u, t - t_next))
            x = euler_step(x, u, t, t_next)
    chord = x1 - x                                                   # x_1 − x_0: the straight line's velocity
    return sum(dt * (chord - u).pow(2).mean().item() for u, dt in us)


# -- an exact toy: a mixture of Gaussians, whose marginal velocity is known ---------------------------
class GaussianMixtureFlow:
    r"""Data $p_0 = \sum_k w_k\,\mathcal N(m_k, s_k^2 I)$ in D dimensions, on the straight path. Given its
    component, $x_t \sim \mathcal N((1-t)\,m_k,\ v_k I)$ with $v_k = (1-t)^2 s_k^2 + t^2$, so $p_t$ is a mixture
    again, and the **marginal** velocity (the one a network trained on $u = \varepsilon - x_0$ learns) is exact:

    $u^*(x, t) = E[\varepsilon - x_0 \mid x_t = x]
    = \sum_k r_k(x)\left(\frac{t - (1-t)s_k^2}{v_k}\,(x - (1-t)m_k) - m_k\right)$,

    $r_k(x)$ the posterior probability of component k. ``velocity`` is a ``model(x, t)`` that
    ``flow_sample`` accepts, x of shape (B, D) and t of shape (B,)."""

    def __init__(self, weights: list[float], means: list[list[float]], stds: list[float]):
        self.weights = torch.tensor(weights, dtype=torch.float64)
        self.means = torch.tensor(means, dtype=torch.float64)            # (K, D)
        self.stds = torch.tensor(stds, dtype=torch.float64)
        k = len(self.weights)
        if not (self.weights.ndim == 1 and self.means.ndim == 2 and len(self.means) == len(self.stds) == k):
            raise ValueError(f"weights (K,), means (K, D) and stds (K,) must agree on K; got shapes "
                             f"{tuple(self.weights.shape)}, {tuple(self.means.shape)}, {tuple(self.stds.shape)}")
        if bool((self.weights <= 0).any()) or abs(float(self.weights.sum()) - 1) > 1e-6 or bool((self.stds <= 0).any()):
            raise ValueError(f"weights must be > 0 and sum to 1, stds > 0; got {weights}, {stds}")

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` draws of $x_0$, shape (n, D), float64."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.means.shape[1], dtype=torch.float64, generator=generator)
        return self.means[k] + self.stds[k, None] * noise

    def _components(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(log w_k + log N(x; (1 − t) m_k, v_k I), the means (1 − t) m_k, v_k), components on axis 1."""
        x, t = x.double(), torch.as_tensor(t, dtype=torch.float64).reshape(-1, 1)       # (B, D), (B, 1)
        mean = (1 - t)[..., None] * self.means                                          # (B, K, D)
        var = (1 - t) ** 2 * self.stds ** 2 + t ** 2                                    # (B, K)
        d = x.shape[1]
        sq = ((x[:, None, :] - mean) ** 2).sum(-1)
        log_joint = self.weights.log() - 0.5 * (sq / var + d * torch.log(2 * math.pi * var))
        return log_joint, mean, var

    def log_prob(self, x: Tensor, t: Tensor) -> Tensor:
        r"""$\log p_t(x)$, shape (B,)."""
        return self._components(x, t)[0].logsumexp(1)

    def velocity(self, x: Tensor, t: Tensor) -> Tensor:
        r"""$u^*(x, t)$ above, shape like ``x``."""
        log_joint, mean, var = self._components(x, t)
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1, 1)
        r = log_joint.softmax(1)                                                        # (B, K)
        gain = (t - (1 - t) * self.stds ** 2) / var                                     # (B, K)
        per_component = gain[..., None] * (x.double()[:, None, :] - mean) - self.means  # (B, K, D)
        return (r[..., None] * per_component).sum(1).to(x.dtype)
