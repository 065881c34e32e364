r"""Objectives: what the Trainer minimises. An objective is a function of a model and a batch,

    loss, logs = objective(model, batch)        batch = (x,) or (x, y), already on the device

returning the scalar loss to differentiate and a dict of tensors to log (summed over the steps
between two logs, then averaged; they stay on the device until then). The Trainer knows nothing else
about what it trains: the diffusion loss, the classifier's cross-entropy and the autoencoder's
reconstruction loss are three objectives for one loop.

An objective may also have
- ``prepare(model, data)``: called once when training starts, to check that the model and the data
  fit the objective and, for diffusion, to tell the model what it predicts;
- ``example_inputs(batch)``: the arguments of one forward call, for recording CUDA graphs;
- ``to(device)`` and ``describe()`` (``{"kind": …, "config": …}``): to move it, and to save it in a
  checkpoint so that a resumed run rebuilds it (``objective_from_description``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Optional, Protocol, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .conditioning import TARGETS, Target, check_labels, drop_labels, null_label, unwrap
from .data import random_affine
from .flow import FlowConfig, FlowObjective, ReflowObjective
from .losses import WEIGHTINGS, Weighting, kl_divergence, per_sample_loss
from .schedules import SCHEDULES, NoiseSchedule, make_schedule

Batch = tuple[Tensor, ...]
NUM_T_BUCKETS = 10                                 # the diffusion loss is also logged per tenth of the t range


class Objective(Protocol):
    def __call__(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]: ...


# -- diffusion ------------------------------------------------------------------------------------
@dataclass
class DiffusionConfig:
    """What the network learns: the noise schedule, the prediction target, the loss weighting."""
    schedule: str = "linear"         # "linear", "cosine" or "sigmoid" (make_schedule)
    num_steps: int = 1000            # T
    target: Target = "eps"           # the network predicts ε, x_0 or v
    weighting: Weighting = None      # None, "p2" or "min_snr" (losses.loss_weight)
    p_uncond: float = 0.0            # label drop rate for classifier-free guidance

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}; got {self.schedule!r}")
        if isinstance(self.num_steps, bool) or not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise ValueError(f"DiffusionConfig.num_steps must be an int >= 1; got {self.num_steps!r}")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}; got {self.target!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}; got {self.weighting!r}")
        if not 0.0 <= self.p_uncond <= 1.0:
            raise ValueError(f"p_uncond must be in [0, 1]; got {self.p_uncond}")

    def make_schedule(self, device: Union[str, torch.device] = "cpu") -> NoiseSchedule:
        return make_schedule(self.schedule, self.num_steps).to(device)


class DiffusionObjective:
    r"""$L = \frac1B\sum_b w(t_b)\,\|f_\theta(x_{t_b}, t_b, y_b) - \text{target}_b\|^2$ with $t \sim U\{1, \dots, T\}$
    (drawn as positions 0 … T−1), labels dropped to the null label with probability ``p_uncond``
    (``losses.per_sample_loss``).

    Logs ``t_loss`` and ``t_count``: the loss summed, and the images counted, in each tenth of the t
    range (``loss_by_t`` turns them into the mean loss per bucket)."""

    def __init__(self, config: Optional[DiffusionConfig] = None, device: Union[str, torch.device] = "cpu"):
        self.config = config or DiffusionConfig()
        self.schedule = self.config.make_schedule(device)

    def to(self, device: Union[str, torch.device]) -> "DiffusionObjective":
        return DiffusionObjective(self.config, device)

    def describe(self) -> dict:
        return {"kind": "diffusion", "config": asdict(self.config)}

    def prepare(self, model: nn.Module, data: Batch) -> None:
        """Check model and data, then tell the model what it predicts (``model.target``); a model that
        already predicts something else is an error."""
        inner = unwrap(model)
        conditional = getattr(inner, "null_label", None) is not None
        if len(data) > 1 and not conditional:
            raise ValueError("labels were given but the model is unconditional (it has no null label, e.g. a UNet "
                             "with config.num_classes None); drop the labels or give the model num_classes")
        if len(data) > 1:
            check_labels(data[1], inner.null_label, len(data[0]), name="labels")
        if self.config.p_uncond > 0 and len(data) < 2:
            raise ValueError(f"p_uncond = {self.config.p_uncond} drops labels for guidance, but no labels were given")
        own = getattr(inner, "target", None)
        if own is not None and own != self.config.target:
            raise ValueError(f"the model predicts {own!r} but the objective trains target {self.config.target!r}; "
                             f"use DiffusionConfig(target={own!r}) or a fresh model")
        inner.target = self.config.target
        steps = getattr(inner, "num_steps", None)
        if steps is not None and steps != self.config.num_steps:
            raise ValueError(f"the model was trained on a schedule of T={steps} steps but the objective has "
                             f"T={self.config.num_steps}; use DiffusionConfig(num_steps={steps}) or a fresh model")
        inner.num_steps = self.config.num_steps          # the model knows its schedule's T, as it knows its target

    def example_inputs(self, batch: Batch) -> tuple[Tensor, ...]:
        x0 = batch[0]
        t = torch.zeros(x0.shape[0], dtype=torch.long, device=x0.device)
        return (x0, t) if len(batch) == 1 else (x0, t, batch[1])

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        x0, y = batch[0], (batch[1] if len(batch) > 1 else None)
        cfg, s = self.config, self.schedule
        if y is not None and cfg.p_uncond > 0:
            y = drop_labels(y, cfg.p_uncond, null_label(model))
        t = torch.randint(0, s.num_steps, (x0.shape[0],), device=x0.device)
        losses = per_sample_loss(model, x0, t, s, cfg.target, cfg.weighting, y)
        bucket = t * NUM_T_BUCKETS // s.num_steps
        zeros = torch.zeros(NUM_T_BUCKETS, device=x0.device)
        logs = {"t_loss": zeros.index_add(0, bucket, losses.detach().float()),
                "t_count": zeros.index_add(0, bucket, torch.ones_like(losses, dtype=torch.float))}
        return losses.mean(), logs


def loss_by_t(history: dict[str, list]) -> list[tuple[int, list[float]]]:
    """(step, mean loss in each tenth of the t range) at every log, from a Trainer's ``history``
    (NaN for a bucket that drew no t since the previous log)."""
    return [(step, (torch.tensor(total) / torch.tensor(count)).tolist())
            for (step, total), (_, count) in zip(history["t_loss"], history["t_count"])]


# -- classification -------------------------------------------------------------------------------
@dataclass
class ClassificationConfig:
    """Cross-entropy with label smoothing, on digits freshly turned, moved and zoomed each step."""
    label_smoothing: float = 0.1     # a softer target than one-hot: a regulariser for a small training set
    degrees: float = 10.0            # random_affine's rotation range, ± degrees
    shift: float = 2.0               # … translation, ± pixels
    scale: float = 0.1               # … zoom, 1 ± scale


class ClassificationObjective:
    r"""$L = \mathrm{CE}_\text{smooth}(f_\theta(\mathrm{aug}(x)), y)$; logs the batch accuracy ``accuracy``."""

    def __init__(self, config: Optional[ClassificationConfig] = None, device: Union[str, torch.device] = "cpu"):
        self.config = config or ClassificationConfig()

    def to(self, device: Union[str, torch.device]) -> "ClassificationObjective":
        return self

    def describe(self) -> dict:
        return {"kind": "classification", "config": asdict(self.config)}

    def example_inputs(self, batch: Batch) -> tuple[Tensor, ...]:
        return (batch[0],)

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        if len(batch) < 2:
            raise ValueError("a classification objective needs labels: give the Trainer images and labels")
        x, y = batch
        cfg = self.config
        logits = model(random_affine(x, degrees=cfg.degrees, shift=cfg.shift, scale=cfg.scale))
        loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        return loss, {"accuracy": (logits.argmax(1) == y).float().mean().detach()}


# -- reconstruction (the autoencoder of latent diffusion) ----------------------------------------
RECONSTRUCTION_LOSSES = ("l1", "l2")


@dataclass
class ReconstructionConfig:
    """The autoencoder's loss: the pixel error (``"l1"`` |x̂ − x| or ``"l2"`` (x̂ − x)²) *averaged* over the
    C·H·W values of an image, plus ``beta`` times the KL term *summed* over its latent (both averaged over
    the batch). Stable Diffusion's autoencoders (LDM) weight the KL by the same 1e-6 but *sum* the
    reconstruction over each image; multiplying this loss by C·H·W gives theirs with a KL weight of
    C·H·W·β, so relative to the reconstruction β = 1e-6 here weighs the KL C·H·W times more (12,288× for
    64×64 RGB: their balance is β ≈ 8e-11 here). Notebook 08's β values (1e-6 shipped, 1e-3 collapsing
    the posterior) hold for this normalisation."""
    loss: str = "l1"
    beta: float = 1e-6               # weight of KL(q(z | x) ‖ N(0, I)), per image

    def __post_init__(self) -> None:
        if self.loss not in RECONSTRUCTION_LOSSES:
            raise ValueError(f"ReconstructionConfig.loss must be one of {RECONSTRUCTION_LOSSES}; got {self.loss!r}")
        if isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)) or not 0 <= self.beta < math.inf:
            raise ValueError(f"ReconstructionConfig.beta must be a finite number >= 0; got {self.beta!r}")


class AutoencoderObjective:
    r"""$L = \frac{1}{B\,CHW}\sum |\hat x - x|
    + \beta\,\frac1B\sum_b \mathrm{KL}(\mathcal N(\mu_b, \sigma_b^2) \,\|\, \mathcal N(0, I))$, with
    $(\hat x, \mu, \log\sigma^2)$ = model(x) (``nn.autoencoder``; ε from the global generator, into which the
    Trainer swaps its own stream while it trains) and the error squared for ``loss="l2"``. Labels, if given,
    are ignored.

    Logs ``recon`` (the first term), ``kl`` (the mean KL per image, before β) and ``psnr``: the batch's
    $10\log_{10}(1/\mathrm{MSE})$ in dB, images and clamped reconstructions measured in [0, 1]."""

    def __init__(self, config: Optional[ReconstructionConfig] = None, device: Union[str, torch.device] = "cpu"):
        self.config = config or ReconstructionConfig()

    def to(self, device: Union[str, torch.device]) -> "AutoencoderObjective":
        return self

    def describe(self) -> dict:
        return {"kind": "autoencoder", "config": asdict(self.config)}

    def prepare(self, model: nn.Module, data: Batch) -> None:
        """Check that the model is an autoencoder (``moments`` and ``decode``, as ``nn.Autoencoder``) whose
        channels fit the images."""
        inner = unwrap(model)
        if not (callable(getattr(inner, "moments", None)) and callable(getattr(inner, "decode", None))):
            raise TypeError(f"model must be an autoencoder with moments(x) and decode(z), e.g. "
                            f"minidiff.nn.Autoencoder; got a {type(inner).__name__}")
        channels = getattr(getattr(inner, "config", None), "in_channels", data[0].shape[1])
        if data[0].shape[1] != channels:
            raise ValueError(f"images must have the autoencoder's {channels} channel(s); got shape "
                             f"{tuple(data[0].shape)}")

    def example_inputs(self, batch: Batch) -> tuple[Tensor, ...]:
        return (batch[0],)

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        x = batch[0]
        reconstruction, mean, logvar = model(x)
        error = (reconstruction.float() - x.float()).abs()
        recon = (error if self.config.loss == "l1" else error.pow(2)).mean()
        kl = kl_divergence(mean.float(), logvar.float()).mean()
        mse = ((reconstruction.detach().float().clamp(-1, 1) - x.float().clamp(-1, 1)) / 2).pow(2).mean()
        logs = {"recon": recon.detach(), "kl": kl.detach(), "psnr": -10 * torch.log10(mse)}
        return recon + self.config.beta * kl, logs


# -- rebuilding one from a checkpoint -------------------------------------------------------------
OBJECTIVES: dict[str, tuple[Callable[..., Any], type]] = {
    "diffusion": (DiffusionObjective, DiffusionConfig),
    "flow": (FlowObjective, FlowConfig),
    "reflow": (ReflowObjective, FlowConfig),
    "classification": (ClassificationObjective, ClassificationConfig),
    "autoencoder": (AutoencoderObjective, ReconstructionConfig),
}


def objective_from_description(description: dict, device: Union[str, torch.device] = "cpu") -> Objective:
    """The objective that ``objective.describe()`` described (a kind in OBJECTIVES and its config)."""
    kind = description.get("kind") if isinstance(description, dict) else None
    if kind not in OBJECTIVES:
        raise ValueError(f"objective kind must be one of {sorted(OBJECTIVES)}; got {kind!r} (a checkpoint whose "
                         f"objective is your own function: rebuild it and pass objective= yourself)")
    make, config_class = OBJECTIVES[kind]
    unknown = set(description["config"]) - {f.name for f in fields(config_class)}
    if unknown:
        raise ValueError(f"the {kind} objective has fields {sorted(unknown)} that {config_class.__name__} does "
                         f"not know (saved by a newer minidiff?)")
    return make(config_class(**description["config"]), device)


def as_objective(objective: Union[Objective, DiffusionConfig, FlowConfig, None]) -> Objective:
    """An objective from an objective, a DiffusionConfig (-> DiffusionObjective), a FlowConfig (-> FlowObjective)
    or None (the default diffusion)."""
    if objective is None or isinstance(objective, DiffusionConfig):
        return DiffusionObjective(objective)
    if isinstance(objective, FlowConfig):
        return FlowObjective(objective)
    if not callable(objective):
        raise TypeError(f"objective must be a function (model, batch) -> (loss, logs), or a DiffusionConfig; "
                        f"got {type(objective).__name__}")
    return objective
