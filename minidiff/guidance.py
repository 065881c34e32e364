r"""Classifier-free guidance (Ho & Salimans 2022): one network, conditional and unconditional.

Training: each label is replaced by the **null label** (the model's ``null_label``, which for the
U-Net is ``num_classes``) with probability ``p_uncond``, so the same network learns
$\varepsilon_\theta(x_t, t, y)$ and $\varepsilon_\theta(x_t, t, \varnothing)$ (``drop_labels``).

Sampling: the two predictions are mixed with a guidance scale $w$ (``cfg_mix``),

    ε̃ = ε_u + w (ε_c − ε_u)          w = 0: unconditional, w = 1: conditional, w > 1: guided,

computed in one batched forward pass (``guided_output``). The mix is linear, so it may be taken in
whatever the network predicts (ε, x_0 or v): the conversions between them are affine in the output.

A **guidance** is any function ``(cond, uncond, t, x_t) -> guided output``, ``t`` being the position
the sampler is at (step t + 1, minidiff's 0-indexed convention); samplers take either a scale $w$ (which
becomes ``ClassifierFree(w)``) or such a function, so a variant is one small class here, not a new
argument of every sampler:

    ClassifierFree(w)                  the plain mix, at every step
    Rescaled(w, phi)                   the mix with its standard deviation brought back to the
                                       conditional output's (Lin et al. 2024, §3.4)
    Interval(w, t_low, t_high)         guidance only at positions t in [t_low, t_high] (steps
                                       t_low + 1 … t_high + 1), conditional elsewhere (Kynkäänniemi et al. 2024)
    Thresholded(w, s, target, p)       dynamic thresholding of the guided x̂_0 (Saharia et al. 2022);
                                       p = None: static clipping to [-1, 1]

A model conditioned on several attributes (labels (B, K), one null label per attribute) can also be
guided towards some attributes and away from others: ``Composed(model, terms)`` is such a mix of
conditions, wrapped up as a model the samplers draw from like an unconditional one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .diffusion import Target, eps_and_x0, model_target, predict_eps_from_x0, training_target, unwrap
from .schedules import NoiseSchedule

Guidance = Callable[[Tensor, Tensor, int, Tensor], Tensor]     # (conditional, unconditional, position t, x_t) -> guided


@dataclass(frozen=True)
class NullCaption:
    """The null condition of a text-conditional model (notebook 08): the empty caption, ``length``
    padding tokens (id 0). Its labels are captions as token ids, (B, ``length``) in [0, ``vocab_size``),
    and a caption is dropped as a whole, never word by word."""
    length: int
    vocab_size: int


Null = Union[int, tuple[int, ...], NullCaption]     # one null label, one per attribute, or the empty caption


def null_label(model: Any) -> Null:
    """The label that means "no class" for ``model`` (its ``null_label``; a tuple, one per attribute, for a
    model conditioned on several); ValueError if it has none."""
    label = getattr(unwrap(model), "null_label", None)
    if label is None:
        raise ValueError("guidance needs a class-conditional model (one with a null_label, e.g. a UNet "
                         "with config.num_classes set); this model is unconditional")
    return label


def null_like(y: Tensor, null: Null) -> Tensor:
    """A tensor shaped like the labels ``y`` that holds only null labels: ``null`` everywhere for (B,)
    labels; for (B, K) labels of K attributes, column k holds attribute k's null label ``null[k]``; for
    captions (B, L), the empty caption (all padding, 0)."""
    if isinstance(null, NullCaption):
        return torch.zeros_like(y)
    return torch.as_tensor(null, dtype=y.dtype, device=y.device).expand_as(y)


def label_shape(null: Null, batch: int) -> tuple[int, ...]:
    """The shape of a batch's labels: (B,) for one null label, (B, K) for one per attribute, (B, L) for captions."""
    if isinstance(null, NullCaption):
        return (batch, null.length)
    return (batch,) if isinstance(null, int) else (batch, len(null))


def check_labels(y: Any, null: Null, batch: int, name: str = "y") -> Tensor:
    """Labels for a conditional model, checked: a LongTensor of ``label_shape(null, batch)`` whose
    entries lie in [0, null] (column k in [0, null[k]] for several attributes; the null label itself
    means "not given"). Anything else is a ValueError naming ``name``, what was expected and what came."""
    shape = label_shape(null, batch)
    if isinstance(null, NullCaption):
        return _check_captions(y, null, shape, name)
    if not isinstance(y, Tensor) or y.dtype != torch.long or tuple(y.shape) != shape:
        raise ValueError(f"{name} must be a LongTensor of shape {shape}, one label per image"
                         f"{'' if isinstance(null, int) else ' and attribute'}; got "
                         f"{getattr(y, 'dtype', type(y).__name__)} {tuple(getattr(y, 'shape', ()))}")
    if y.numel() and (bool((y < 0).any()) or bool((y > null_like(y, null)).any())):
        if isinstance(null, int):
            raise ValueError(f"{name} must hold labels in [0, {null - 1}] (or {null}, the null label); got values "
                             f"from {int(y.min())} to {int(y.max())}")
        raise ValueError(f"{name}[:, k] must hold labels in [0, n_k] for the attributes' class counts n = {null} "
                         f"(n_k is attribute k's null label); got columns ranging "
                         f"{[(int(c.min()), int(c.max())) for c in y.unbind(1)]}")
    return y


def _check_captions(y: Any, null: NullCaption, shape: tuple[int, ...], name: str) -> Tensor:
    if not isinstance(y, Tensor) or y.dtype != torch.long or tuple(y.shape) != shape:
        raise ValueError(f"{name} must be a LongTensor of shape {shape}: one caption of {null.length} token ids "
                         f"per image (Tokenizer.encode makes them); got "
                         f"{getattr(y, 'dtype', type(y).__name__)} {tuple(getattr(y, 'shape', ()))}")
    if y.numel() and (bool((y < 0).any()) or bool((y >= null.vocab_size).any())):
        raise ValueError(f"{name} must hold token ids in [0, {null.vocab_size - 1}]; got values from "
                         f"{int(y.min())} to {int(y.max())}")
    return y


def labels_in_turn(n: int, null: Null) -> Tensor:
    """Labels for ``n`` images that run through the classes in turn: 0, 1, 2, … for one label; for
    several attributes every combination, the first attribute changing fastest."""
    if isinstance(null, NullCaption):
        raise ValueError("labels_in_turn runs through classes; a text-conditional model takes captions "
                         "(Tokenizer.encode) instead")
    i = torch.arange(n)
    if isinstance(null, int):
        return i % null
    columns, stride = [], 1
    for count in null:
        columns.append(i // stride % count)
        stride *= count
    return torch.stack(columns, dim=1)


def drop_labels(y: Tensor, p_uncond: float, null: Null, generator: Optional[torch.Generator] = None) -> Tensor:
    """Replace each label by the null label ``null`` with probability ``p_uncond`` (training for CFG).
    With several attributes (y of shape (B, K)) each one is dropped on its own, so the network also
    learns every partial condition ("a circle, any colour"), which composing conditions needs. A caption
    (``NullCaption``) is dropped whole: it becomes the empty caption."""
    if not 0.0 <= p_uncond <= 1.0:
        raise ValueError(f"p_uncond must be in [0, 1]; got {p_uncond}")
    if isinstance(null, NullCaption):
        drop = (torch.rand(y.shape[0], device=y.device, generator=generator) < p_uncond).unsqueeze(1)
        return torch.where(drop, null_like(y, null), y)
    drop = torch.rand(y.shape, device=y.device, generator=generator) < p_uncond
    return torch.where(drop, null_like(y, null), y)


def cfg_mix(cond: Tensor, uncond: Tensor, scale: float) -> Tensor:
    r"""$\tilde\varepsilon = \varepsilon_u + w\,(\varepsilon_c - \varepsilon_u)$ with $w$ = ``scale``."""
    return uncond + scale * (cond - uncond)


@dataclass(frozen=True)
class ClassifierFree:
    """Plain classifier-free guidance with scale ``scale`` (w), at every step."""
    scale: float

    def __post_init__(self) -> None:
        check_scale(self.scale)

    def __call__(self, cond: Tensor, uncond: Tensor, t: int, x_t: Tensor) -> Tensor:
        return cfg_mix(cond, uncond, self.scale)


def per_image_std(x: Tensor) -> Tensor:
    """The standard deviation of each image's values, shaped (B, 1, 1, …) to broadcast against ``x``."""
    return x.flatten(1).std(dim=1).reshape(-1, *([1] * (x.ndim - 1)))


@dataclass(frozen=True)
class Rescaled:
    r"""The guided output rescaled towards the conditional output's standard deviation (Lin et al. 2024,
    "Common diffusion noise schedules and sample steps are flawed", §3.4, eqs. 15–17):

    $x_{cfg} = x_u + w(x_c - x_u)$, $x_{re} = x_{cfg}\,\sigma(x_c)/\sigma(x_{cfg})$,
    $x = \phi\,x_{re} + (1 - \phi)\,x_{cfg}$, per image. A large $w$ inflates $\sigma(x_{cfg})$, which is
    what over-exposes guided samples; $\phi = 0$ is plain CFG."""
    scale: float
    phi: float = 0.7

    def __post_init__(self) -> None:
        check_scale(self.scale)
        if not 0.0 <= check_scale(self.phi, "phi") <= 1.0:
            raise ValueError(f"phi must be in [0, 1] (0: plain CFG, 1: fully rescaled); got {self.phi}")

    def __call__(self, cond: Tensor, uncond: Tensor, t: int, x_t: Tensor) -> Tensor:
        guided = cfg_mix(cond, uncond, self.scale)
        rescaled = guided * per_image_std(cond) / per_image_std(guided).clamp(min=1e-12)
        return self.phi * rescaled + (1 - self.phi) * guided


@dataclass(frozen=True)
class Interval:
    """Guidance with scale ``scale`` only while the sampler's position t lies in [``t_low``, ``t_high``]
    (positions, like every minidiff t: steps ``t_low`` + 1 to ``t_high`` + 1); the conditional output
    (w = 1) elsewhere (Kynkäänniemi et al. 2024, "Applying guidance in a limited interval improves
    sample and distribution quality": guidance at high noise mostly removes diversity, at low noise
    it does little)."""
    scale: float
    t_low: int
    t_high: int

    def __post_init__(self) -> None:
        check_scale(self.scale)
        if not 0 <= self.t_low <= self.t_high:
            raise ValueError(f"the interval must have 0 <= t_low <= t_high; got t_low={self.t_low}, t_high={self.t_high}")

    def __call__(self, cond: Tensor, uncond: Tensor, t: int, x_t: Tensor) -> Tensor:
        return cfg_mix(cond, uncond, self.scale if self.t_low <= t <= self.t_high else 1.0)


@dataclass(frozen=True)
class Thresholded:
    r"""Plain CFG, then thresholding of the guided $\hat x_0$ (Saharia et al. 2022, Imagen, §2.3).

    Dynamic (``percentile`` = p): per image $q$ = the p quantile of $|\hat x_0|$, $q \leftarrow \max(q, 1)$,
    $\hat x_0 \leftarrow \mathrm{clip}(\hat x_0, -q, q)/q$. Static (``percentile=None``): $\hat x_0 \leftarrow
    \mathrm{clip}(\hat x_0, -1, 1)$. The output is rebuilt from $x_t$ and that $\hat x_0$
    ($\hat\varepsilon = (x_t - \sqrt{\bar\alpha_t}\hat x_0)/\sqrt{1-\bar\alpha_t}$, $\bar\alpha_t$ read at the
    position the sampler passes, ``[t]``), in the model's own ``target``."""
    scale: float
    schedule: NoiseSchedule
    target: Target
    percentile: Optional[float] = 0.995

    def __post_init__(self) -> None:
        check_scale(self.scale)
        if self.percentile is not None and not 0.0 < self.percentile <= 1.0:
            raise ValueError(f"percentile must be in (0, 1], or None for static clipping to [-1, 1]; got {self.percentile}")

    def __call__(self, cond: Tensor, uncond: Tensor, t: int, x_t: Tensor) -> Tensor:
        s = self.schedule
        guided = cfg_mix(cond, uncond, self.scale)
        _, x0 = eps_and_x0(guided.float(), x_t.float(), t, s, self.target)
        x0 = x0.clamp(-1, 1) if self.percentile is None else dynamic_threshold(x0, self.percentile)
        out = training_target(self.target, x0, predict_eps_from_x0(x_t.float(), t, x0, s), t, s)
        return out.to(guided.dtype)


def dynamic_threshold(x0: Tensor, percentile: float) -> Tensor:
    r"""Imagen's dynamic thresholding: per image $q = \max(1, \mathrm{quantile}_p |\hat x_0|)$, then
    $\mathrm{clip}(\hat x_0, -q, q)/q$: values inside [-1, 1] stay in it, the image is shrunk when it overshoots."""
    q = x0.abs().flatten(1).quantile(percentile, dim=1).clamp(min=1.0)
    q = q.reshape(-1, *([1] * (x0.ndim - 1)))
    return x0.clamp(-q, q) / q


Condition = Union[int, None, Sequence[Optional[int]]]       # a label, or one per attribute; None: not given


class Composed(nn.Module):
    r"""Several conditions of one model, composed into a single prediction (Liu et al. 2022,
    "Compositional visual generation with composable diffusion models"):

    $\tilde f(x_t, t) = f(x_t, t, b) + \sum_k w_k\,[f(x_t, t, y_k) - f(x_t, t, b)]$

    ``terms`` are the pairs $(y_k, w_k)$, ``base`` is $b$ (default: every attribute null, i.e. the
    unconditional model). Plain CFG is one term, $w_1 = w$. A condition is one label per attribute,
    None standing for that attribute's null label: ``(0, None)`` is "a circle, any colour". A
    negative $w_k$ steers *away* from $y_k$ (Liu et al.'s negation). A negative prompt $n$ as Stable
    Diffusion and diffusers apply it is the base instead, ``base=n``: $f(n) + w\,[f(y) - f(n)]$. The $1 + K$ outputs come from
    one batched forward pass. It is sampled like an unconditional model (no ``y``):
    ``ddim_sample(Composed(model, [((0, 2), 3.0)]), s, shape)``; the mix is linear, so it is valid for
    any target, which it takes from ``model``."""

    def __init__(self, model: nn.Module, terms: Sequence[tuple[Condition, float]], base: Condition = None):
        super().__init__()
        if not terms:
            raise ValueError("terms must hold at least one (condition, weight) pair; got none")
        self.model, self.null = model, null_label(model)
        if isinstance(self.null, NullCaption):
            raise ValueError("Composed mixes class labels; for a text-conditional model, guide with captions "
                             "(y = token ids) instead")
        rows = [self._row(base, "base")] + [self._row(y, f"terms[{k}]") for k, (y, _) in enumerate(terms)]
        self.register_buffer("conditions", torch.tensor(rows, dtype=torch.long), persistent=False)   # (1 + K, A)
        self.weights = [check_scale(w, f"terms[{k}]'s weight") for k, (_, w) in enumerate(terms)]

    def _row(self, condition: Condition, name: str) -> list[int]:
        """A condition as one label per attribute (nulls filled in), checked against the model's counts."""
        nulls = [self.null] if isinstance(self.null, int) else list(self.null)
        given = [condition] if isinstance(self.null, int) or condition is None else list(condition)
        given = [None] * len(nulls) if condition is None else given
        if len(given) != len(nulls):
            raise ValueError(f"{name} must give {len(nulls)} labels (one per attribute, None for 'not given'); "
                             f"got {condition!r}")
        for label, null in zip(given, nulls):
            if label is not None and (isinstance(label, bool) or not isinstance(label, int) or not 0 <= label <= null):
                raise ValueError(f"{name} must hold labels in [0, {null}] or None; got {condition!r}")
        return [null if label is None else label for label, null in zip(given, nulls)]

    @property
    def target(self) -> Optional[Target]:
        return model_target(self.model)

    def forward(self, x: Tensor, t: Tensor, y: Optional[Tensor] = None) -> Tensor:
        if y is not None:
            raise ValueError("a Composed model holds its own conditions; sample it without labels y")
        n, batch = len(self.conditions), x.shape[0]
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(batch) if t.ndim == 0 else t
        ys = self.conditions.to(x.device).repeat_interleave(batch, dim=0)   # condition i for images i·B … (i+1)·B − 1
        ys = ys[:, 0] if isinstance(self.null, int) else ys
        base, *outs = self.model(x.repeat(n, *([1] * (x.ndim - 1))), t.repeat(n), ys).chunk(n)
        return base + sum(w * (out - base) for w, out in zip(self.weights, outs))


def check_scale(scale: float, name: str = "guidance_scale") -> float:
    """A finite real ``scale``; NaN or ±inf would make every image NaN, so they are a ValueError."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"{name} must be a finite number (0: unconditional, 1: conditional, > 1: guided); "
                         f"got {scale!r}")
    return float(scale)


def as_guidance(guidance: Union[float, Guidance, None]) -> Optional[Guidance]:
    """None, a scale w (-> ``ClassifierFree(w)``) or a guidance function, as a guidance function or None."""
    if guidance is None or callable(guidance):
        return guidance
    return ClassifierFree(check_scale(guidance))


def guided_output(model: Callable[..., Tensor], x_t: Tensor, t: int, y: Optional[Tensor],
                  guidance: Optional[Guidance]) -> Tensor:
    r"""The model's output at $(x_t, t, y)$ for one position ``t`` (step t + 1) shared by the batch; with a
    ``guidance``, the conditional and the unconditional (null-label) outputs come from one batched
    pass over $[x_t; x_t]$ and are mixed by it."""
    t_batch = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
    if guidance is None:
        return model(x_t, t_batch, y) if y is not None else model(x_t, t_batch)
    if y is None:
        raise ValueError("guidance needs labels y (it mixes the conditional and unconditional model)")
    null = null_like(y, null_label(model))
    both = model(torch.cat([x_t, x_t]), torch.cat([t_batch, t_batch]), torch.cat([y, null]))
    cond, uncond = both.chunk(2)
    return guidance(cond, uncond, t, x_t)


def projected_mix(cond: Tensor, uncond: Tensor, scale: float, eta: float = 0.0,
                  norm_threshold: Optional[float] = None, delta: Optional[Tensor] = None) -> Tensor:
    r"""Adaptive projected guidance's mix (Sadat et al. 2024, "Eliminating oversaturation and artifacts of
    high guidance scales in diffusion models", APG), per image:

    $\Delta = x_c - x_u$ (or the ``delta`` given, e.g. a running average of it), shortened to norm at most
    $r$ = ``norm_threshold``: $\Delta \leftarrow \Delta\,\min(1, r/\lVert\Delta\rVert)$; split into its part
    along the conditional prediction, $\Delta_\parallel = \frac{\langle\Delta, x_c\rangle}{\langle x_c, x_c\rangle}x_c$,
    and the rest $\Delta_\perp = \Delta - \Delta_\parallel$; then

    $\tilde x = x_c + (w - 1)\,(\Delta_\perp + \eta\,\Delta_\parallel)$.

    With $\eta = 1$ and no threshold this is plain CFG, $x_u + w(x_c - x_u)$. The parallel part mostly
    scales the prediction up (the over-saturation); $\eta = 0$ drops it, so the guided output differs from
    $x_c$ only orthogonally to $x_c$. The inner products run in float64."""
    delta = (cond - uncond) if delta is None else delta
    flat_delta, flat_cond = delta.flatten(1).double(), cond.flatten(1).double()     # (B, D)
    if norm_threshold is not None:
        norm = flat_delta.norm(dim=1, keepdim=True).clamp(min=1e-12)
        flat_delta = flat_delta * (norm_threshold / norm).clamp(max=1.0)
    along = (flat_delta * flat_cond).sum(1, keepdim=True) / (flat_cond * flat_cond).sum(1, keepdim=True).clamp(min=1e-24)
    parallel = along * flat_cond
    update = (flat_delta - parallel) + eta * parallel
    return cond + (scale - 1) * update.view_as(cond).to(cond.dtype)


@dataclass
class Projected:
    r"""Adaptive projected guidance (APG, Sadat et al. 2024) as a guidance for the samplers: the mix of
    ``projected_mix`` applied to the denoised predictions $\hat x_0^c, \hat x_0^u$ (the paper guides the
    denoiser's output, not $\varepsilon$), with their difference averaged over the steps already taken,
    $D_t = \Delta_t + m\,D_{t+1}$ (``momentum`` = m; the paper's negative m pushes away from the previous
    steps' update), and the result rebuilt in the model's own ``target``. ``eta`` = 1, ``momentum`` = 0 and
    ``norm_threshold`` = None give plain CFG. The running average restarts when the sampler's position
    grows (a new sampling run)."""
    scale: float
    schedule: NoiseSchedule
    target: Target
    eta: float = 0.0
    norm_threshold: Optional[float] = None
    momentum: float = 0.0

    def __post_init__(self) -> None:
        check_scale(self.scale)
        check_scale(self.eta, "eta")
        check_scale(self.momentum, "momentum")
        if self.norm_threshold is not None and not check_scale(self.norm_threshold, "norm_threshold") > 0:
            raise ValueError(f"norm_threshold must be positive, or None for no threshold; got {self.norm_threshold}")
        self._running: Optional[Tensor] = None
        self._last_t: Optional[int] = None

    def __call__(self, cond: Tensor, uncond: Tensor, t: int, x_t: Tensor) -> Tensor:
        s = self.schedule
        x0_c = eps_and_x0(cond.float(), x_t.float(), t, s, self.target)[1]
        x0_u = eps_and_x0(uncond.float(), x_t.float(), t, s, self.target)[1]
        if self._running is None or self._last_t is None or t >= self._last_t or self._running.shape != x0_c.shape:
            self._running = torch.zeros_like(x0_c)              # a new run: no earlier steps to average
        self._running = (x0_c - x0_u) + self.momentum * self._running
        self._last_t = t
        x0 = projected_mix(x0_c, x0_u, self.scale, self.eta, self.norm_threshold, self._running)
        out = training_target(self.target, x0, predict_eps_from_x0(x_t.float(), t, x0, s), t, s)
        return out.to(cond.dtype)
