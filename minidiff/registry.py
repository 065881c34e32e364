r"""The registry of model kinds: how any network of the course is described, rebuilt and saved.

A model is saved as its **description** and its weights. The description is plain data,

    {"kind": "unet", "config": {…UNetConfig as JSON…}, "target": "v"}

so a checkpoint can be read with ``weights_only=True`` and rebuilt without knowing in advance what it
holds: ``build(description)`` looks the kind up in a ``Registry`` (``DEFAULT``, read-only: ``KINDS``) and
calls its class with its config; ``register`` / ``Registry.with_kind`` return a new registry with one more
kind, to pass on as ``registry=``, so no module state changes.
``target`` (what a denoiser predicts) travels in the description, so a loaded model knows it.
Checkpoints (``minidiff.train``), the shipped files (``minidiff.pretrained``) and the CLI all go through
``describe`` / ``build``; a new kind of network (notebook 08's autoencoder) is one more line in DEFAULT.
A text-conditional U-Net is kind "unet" too: ``build`` plugs its text encoder in (``nn.text.text_unet``).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional, Union

import torch
from torch import nn

from .checkpoint import load_checkpoint, save_checkpoint
from .conditioning import unwrap
from .nn.autoencoder import Autoencoder, AutoencoderConfig
from .nn.classifier import ClassifierConfig, DigitClassifier
from .nn.text import text_unet
from .nn.unet import UNet, UNetConfig

MODEL_FORMAT = "minidiff.model/2"


@dataclass(frozen=True)
class Kind:
    """One kind of network: its class and config dataclass, built as ``make(config_class(**config))``
    (``make`` defaults to the class itself)."""
    model_class: type
    config_class: type
    make: Optional[Callable[[Any], nn.Module]] = None


def _unet(config: UNetConfig) -> UNet:
    """A U-Net of ``config``, with its text encoder plugged in when it reads captions (``vocab_size`` set)."""
    return text_unet(config) if config.vocab_size is not None else UNet(config)


class Registry:
    """The kinds of network ``describe`` and ``build`` know: a read-only mapping {name: Kind}.
    ``with_kind`` returns a new registry with one more kind; nothing changes in place, so there is no
    module state for a test to restore. ``DEFAULT`` holds the course's kinds."""

    def __init__(self, kinds: Mapping[str, Kind]):
        self.kinds: Mapping[str, Kind] = MappingProxyType(dict(kinds))

    def with_kind(self, name: str, model_class: type, config_class: type,
                  make: Optional[Callable[[Any], nn.Module]] = None) -> "Registry":
        """This registry plus the kind ``name`` (its class takes one dataclass config, kept as ``model.config``)."""
        if not is_dataclass(config_class):
            raise TypeError(f"config_class must be a dataclass; got {config_class!r}")
        return Registry({**self.kinds, name: Kind(model_class, config_class, make)})

    def kind_of(self, model: nn.Module) -> str:
        """The registered kind of ``model`` (unwrapping DDP and torch.compile)."""
        inner = unwrap(model)
        for name, kind in self.kinds.items():
            if type(inner) is kind.model_class:
                return name
        raise ValueError(f"model must be one of the registered kinds {sorted(self.kinds)} (Registry.with_kind "
                         f"adds one); got a {type(inner).__name__}")

    def describe(self, model: nn.Module) -> dict:
        """``{"kind", "config", "target"}`` of ``model``: everything ``build`` needs to make it again."""
        inner = unwrap(model)
        return {"kind": self.kind_of(inner), "config": config_dict(inner.config),
                "target": getattr(inner, "target", None)}

    def build(self, description: dict) -> nn.Module:
        """A fresh model (random weights) from ``describe(model)``'s output."""
        if not isinstance(description, dict) or description.get("kind") not in self.kinds:
            got = description.get("kind") if isinstance(description, dict) else type(description).__name__
            raise ValueError(f"description must name a registered kind, one of {sorted(self.kinds)}; got {got!r}")
        kind = self.kinds[description["kind"]]
        unknown = set(description["config"]) - {f.name for f in fields(kind.config_class)}
        if unknown:
            raise ValueError(f"the {description['kind']} config has fields {sorted(unknown)} that "
                             f"{kind.config_class.__name__} does not know (saved by a newer minidiff?)")
        config = kind.config_class(**{k: tuple(v) if isinstance(v, list) else v
                                      for k, v in description["config"].items()})
        model = (kind.make or kind.model_class)(config)
        if description.get("target") is not None:
            model.target = description["target"]
        return model


DEFAULT = Registry({
    "unet": Kind(UNet, UNetConfig, _unet),
    "classifier": Kind(DigitClassifier, ClassifierConfig),
    "autoencoder": Kind(Autoencoder, AutoencoderConfig),
})
KINDS = DEFAULT.kinds            # read-only


def register(name: str, model_class: type, config_class: type, registry: Optional[Registry] = None) -> Registry:
    """A new registry: ``registry`` (default ``DEFAULT``) plus the kind ``name``. Pass it on as ``registry=``."""
    return (registry or DEFAULT).with_kind(name, model_class, config_class)


def kind_of(model: nn.Module, registry: Optional[Registry] = None) -> str:
    """The registered kind of ``model`` (unwrapping DDP and torch.compile)."""
    return (registry or DEFAULT).kind_of(model)


def config_dict(config: Any) -> dict:
    """A config dataclass as plain JSON-able data (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


def describe(model: nn.Module, registry: Optional[Registry] = None) -> dict:
    """``{"kind", "config", "target"}`` of ``model``: everything ``build`` needs to make it again."""
    return (registry or DEFAULT).describe(model)


def build(description: dict, registry: Optional[Registry] = None) -> nn.Module:
    """A fresh model (random weights) from ``describe(model)``'s output."""
    return (registry or DEFAULT).build(description)


def save_model(path: Union[str, os.PathLike], model: nn.Module, weights: Optional[dict] = None,
               registry: Optional[Registry] = None, **extra: Any) -> Path:
    """Write ``model``'s description and weights (default: its own state_dict) atomically, with a
    checksum (``minidiff.checkpoint``); ``extra`` entries (plain data) are stored beside them."""
    state = {"format": MODEL_FORMAT, "model": describe(model, registry),
             "weights": weights if weights is not None else unwrap(model).state_dict(), **extra}
    save_checkpoint(path, state)
    return Path(path)


def load_model(path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu",
               registry: Optional[Registry] = None) -> tuple[nn.Module, dict]:
    """(model in eval mode and frozen, the whole saved dict) from a ``save_model`` file."""
    state = load_checkpoint(path)
    if state.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is not a minidiff model file (format {state.get('format')!r}, expected "
                         f"{MODEL_FORMAT!r}); a training checkpoint is read by Trainer.from_checkpoint")
    return from_weights(state["model"], state["weights"], device, registry), state


def from_weights(description: dict, weights: dict, device: Union[str, torch.device] = "cpu",
                 registry: Optional[Registry] = None) -> nn.Module:
    """``build(description)`` with ``weights`` loaded (16-bit stored tensors cast back), eval mode, frozen."""
    model = build(description, registry)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()})
    return model.to(device).eval().requires_grad_(False)
