r"""The registry of model kinds: how any network of the course is described, rebuilt and saved.

A model is saved as its **description** and its weights. The description is plain data,

    {"kind": "unet", "config": {…UNetConfig as JSON…}, "target": "v"}

so a checkpoint can be read with ``weights_only=True`` and rebuilt without knowing in advance what it
holds: ``build(description)`` looks the kind up in ``KINDS`` and calls its class with its config.
``target`` (what a denoiser predicts) travels in the description, so a loaded model knows it.
Checkpoints (``minidiff.train``), the shipped files (``minidiff.pretrained``) and the CLI all go through
``describe`` / ``build``; a new kind of network (notebook 08's autoencoder) is one more line in KINDS.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from .checkpoint import load_checkpoint, save_checkpoint
from .diffusion import unwrap
from .nn.autoencoder import Autoencoder, AutoencoderConfig
from .nn.classifier import ClassifierConfig, DigitClassifier
from .nn.unet import UNet, UNetConfig

MODEL_FORMAT = "minidiff.model/2"


@dataclass(frozen=True)
class Kind:
    """One kind of network: its class, built as ``model_class(config_class(**config))``."""
    model_class: type
    config_class: type


KINDS: dict[str, Kind] = {
    "unet": Kind(UNet, UNetConfig),
    "classifier": Kind(DigitClassifier, ClassifierConfig),
    "autoencoder": Kind(Autoencoder, AutoencoderConfig),
}


def register(name: str, model_class: type, config_class: type) -> None:
    """Add a kind of network (its class takes one dataclass config, stored as ``model.config``)."""
    if not is_dataclass(config_class):
        raise TypeError(f"config_class must be a dataclass; got {config_class!r}")
    KINDS[name] = Kind(model_class, config_class)


def kind_of(model: nn.Module) -> str:
    """The registered kind of ``model`` (unwrapping DDP and torch.compile)."""
    inner = unwrap(model)
    for name, kind in KINDS.items():
        if type(inner) is kind.model_class:
            return name
    raise ValueError(f"model must be one of the registered kinds {sorted(KINDS)} (minidiff.registry.register "
                     f"adds one); got a {type(inner).__name__}")


def config_dict(config: Any) -> dict:
    """A config dataclass as plain JSON-able data (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


def describe(model: nn.Module) -> dict:
    """``{"kind", "config", "target"}`` of ``model``: everything ``build`` needs to make it again."""
    inner = unwrap(model)
    return {"kind": kind_of(inner), "config": config_dict(inner.config), "target": getattr(inner, "target", None)}


def build(description: dict) -> nn.Module:
    """A fresh model (random weights) from ``describe(model)``'s output."""
    if not isinstance(description, dict) or description.get("kind") not in KINDS:
        got = description.get("kind") if isinstance(description, dict) else type(description).__name__
        raise ValueError(f"description must name a registered kind, one of {sorted(KINDS)}; got {got!r}")
    kind = KINDS[description["kind"]]
    known = {f.name for f in fields(kind.config_class)}
    unknown = set(description["config"]) - known
    if unknown:
        raise ValueError(f"the {description['kind']} config has fields {sorted(unknown)} that "
                         f"{kind.config_class.__name__} does not know (saved by a newer minidiff?)")
    config = kind.config_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in description["config"].items()})
    model = kind.model_class(config)
    if description.get("target") is not None:
        model.target = description["target"]
    return model


def save_model(path: Union[str, os.PathLike], model: nn.Module, weights: Optional[dict] = None,
               **extra: Any) -> Path:
    """Write ``model``'s description and weights (default: its own state_dict) atomically, with a
    checksum (``minidiff.checkpoint``); ``extra`` entries (plain data) are stored beside them."""
    state = {"format": MODEL_FORMAT, "model": describe(model),
             "weights": weights if weights is not None else unwrap(model).state_dict(), **extra}
    save_checkpoint(path, state)
    return Path(path)


def load_model(path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu") -> tuple[nn.Module, dict]:
    """(model in eval mode and frozen, the whole saved dict) from a ``save_model`` file."""
    state = load_checkpoint(path)
    if state.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is not a minidiff model file (format {state.get('format')!r}, expected "
                         f"{MODEL_FORMAT!r}); a training checkpoint is read by Trainer.from_checkpoint")
    return from_weights(state["model"], state["weights"], device), state


def from_weights(description: dict, weights: dict, device: Union[str, torch.device] = "cpu") -> nn.Module:
    """``build(description)`` with ``weights`` loaded (16-bit stored tensors cast back), eval mode, frozen."""
    model = build(description)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()})
    return model.to(device).eval().requires_grad_(False)
