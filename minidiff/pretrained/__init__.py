r"""Pretrained: the small checkpoints that ship inside the package, checked before they are read.

``minidiff/pretrained/checkpoints/`` holds one file per checkpoint and ``manifest.json``, which records for each
name: the file, its SHA-256, the recipe that made it (``python -m minidiff train --recipe NAME``
remakes it), the metrics it reached, when, its size in numbers, its storage dtype and its config.

Loading a checkpoint:

1. look the name up in the manifest (unknown name -> ValueError listing the shipped names);
2. hash the file and compare with the manifest (a mismatch -> ``ChecksumError``: the file is corrupt
   or was changed, and the message says how to restore it) *before* unpickling anything;
3. read it with ``torch.load(..., weights_only=True)``, which rebuilds tensors and plain data only
   and refuses to run code stored in the file.

Saving (``save_shipped``) writes the file and then the manifest, each atomically: a temporary file
in the same folder, then ``os.replace``, so a crash leaves the old version intact.
"""
from __future__ import annotations

import datetime
import hashlib
import importlib.resources
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..checkpoint import TRAIN_FORMAT, atomic_write, load_checkpoint, save_checkpoint
from ..conditioning import labels_in_turn, null_label
from ..editing import check_images, check_mask, check_strength, inpaint, sdedit
from ..flow import FlowConfig, FlowPath, flow_sample
from ..latent import caption_tokenizer, decode_latents, encode_images, sample_images
from ..nn.autoencoder import Autoencoder
from ..nn.classifier import DigitClassifier
from ..objectives import DiffusionConfig
from ..registry import from_weights
from ..samplers import dpm_solver_sample
from ..schedules import NoiseSchedule

PathLike = Union[str, os.PathLike]
CHECKPOINT_DIR = Path(str(importlib.resources.files("minidiff.pretrained").joinpath("checkpoints")))
MANIFEST = "manifest.json"
SHIPPED_MODE = 0o644                   # temporary files are created private (0600); shipped ones are for all to read


class ChecksumError(ValueError):
    """A shipped checkpoint's SHA-256 differs from the manifest's: the file is corrupt or was changed."""


def _root(root: Optional[PathLike]) -> Path:
    # read CHECKPOINT_DIR at call time, so tests can point it at a copy
    return Path(root) if root is not None else CHECKPOINT_DIR


def read_manifest(root: Optional[PathLike] = None) -> dict[str, dict]:
    """The manifest ``{name: entry}`` of the checkpoints folder ``root`` (default: the package's own)."""
    path = _root(root) / MANIFEST
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"the manifest {path} is corrupt or truncated ({type(err).__name__}: {err}); restore it "
                         f"with `git checkout minidiff/pretrained/checkpoints/{MANIFEST}` in a clone of minidiff "
                         f"or by reinstalling minidiff") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"the manifest {path} is corrupt: it holds a {type(manifest).__name__}, not a dict of entries")
    return manifest


def sha256(path: PathLike) -> str:
    """The SHA-256 of a file's bytes, as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _restore_hint(entry: dict, root: Path) -> str:
    return (f"restore it with `git checkout minidiff/pretrained/checkpoints/{entry['file']}` in a clone of minidiff, "
            f"by reinstalling minidiff (`pip install --force-reinstall minidiff`), or remake it with "
            f"`python -m minidiff train --recipe {entry['recipe']} --out {root}`")


def _entry(name: str, root: Path) -> dict:
    """The manifest entry of ``name``, or a ValueError listing the names there are."""
    _check_manifest_exists(root)
    manifest = read_manifest(root)
    if name not in manifest:
        raise ValueError(f"name must be a shipped checkpoint, one of {sorted(manifest)}; got {name!r} "
                         f"(manifest: {root / MANIFEST})")
    return manifest[name]


def _check_manifest_exists(root: Path) -> None:
    if not (root / MANIFEST).is_file():
        raise FileNotFoundError(f"no manifest at {root / MANIFEST}, so no shipped checkpoint can be checked or "
                                f"loaded; restore it with `git checkout minidiff/pretrained/checkpoints/{MANIFEST}` "
                                f"in a clone of minidiff or by reinstalling minidiff")


def load_state(name: str, root: Optional[PathLike] = None) -> tuple[dict, dict]:
    """(state_dict, manifest entry) of the shipped checkpoint ``name``, its SHA-256 verified first.

    Raises ValueError for an unknown name, FileNotFoundError (naming the recipe that remakes it) for
    a missing file, ChecksumError for a file that differs from the manifest, and
    ``minidiff.checkpoint.UnsafeCheckpointError`` for one that ``weights_only`` loading refuses.
    """
    root = _root(root)
    entry = _entry(name, root)
    path = root / entry["file"]
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {name!r} should be at {path}, but the file is missing; "
                                + _restore_hint(entry, root))
    actual = sha256(path)
    if actual != entry["sha256"]:
        raise ChecksumError(f"checkpoint {name!r} at {path} is corrupt or was tampered with: its SHA-256 is "
                            f"{actual}, the manifest expects {entry['sha256']}. It was not loaded; "
                            + _restore_hint(entry, root))
    return load_checkpoint(path, map_location="cpu"), entry


def save_shipped(name: str, state_dict: dict, recipe: str, metrics: dict, config: dict,
                 dtype: Literal["float32", "float16"] = "float32", root: Optional[PathLike] = None) -> dict:
    """Write ``state_dict`` to ``root/NAME.pt`` and record it in ``root/manifest.json``; returns the entry.

    ``params`` in the entry counts the stored floating-point numbers (weights and buffers).
    ``dtype="float16"`` halves the file by storing floating tensors in half precision (loading casts
    them back into the model's dtype). Both writes are atomic; the manifest keeps its other entries.
    """
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16'; got {dtype!r}")
    root = _root(root)
    root.mkdir(parents=True, exist_ok=True)
    stored = {k: v.detach().cpu().to(getattr(torch, dtype)) if v.is_floating_point() else v.detach().cpu()
              for k, v in state_dict.items()}
    file = f"{name}.pt"
    save_checkpoint(root / file, stored)
    os.chmod(root / file, SHIPPED_MODE)
    entry = {"file": file, "sha256": sha256(root / file), "recipe": recipe, "metrics": metrics,
             "created": datetime.date.today().isoformat(), "dtype": dtype, "config": config,
             "params": sum(v.numel() for v in stored.values() if v.is_floating_point()),
             "torch": torch.__version__}
    manifest = read_manifest(root) | {name: entry}
    atomic_write(root / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n"), mode="w")
    os.chmod(root / MANIFEST, SHIPPED_MODE)
    _classifier.cache_clear()           # a cached model may now be stale
    _autoencoder.cache_clear()
    _shipped_ldm.cache_clear()
    return entry


@lru_cache(maxsize=8)
def _classifier(name: str, device: str) -> DigitClassifier:
    state, entry = load_state(name)
    return from_weights(entry["config"]["model"], state, device)


def load_classifier(name: str = "classifier", device: Union[str, torch.device] = "cpu") -> DigitClassifier:
    """The shipped ``DigitClassifier`` (``minidiff.nn.classifier``) called ``name``, on ``device``, in eval mode,
    frozen. A shipped file of another kind (e.g. a diffusion model) is a ValueError naming the classifiers.

    Loaded once per (name, device) and then shared: do not train it in place (``copy.deepcopy`` it first).
    """
    kind = (_entry(name, _root(None))["config"].get("model") or {}).get("kind")
    if kind != "classifier":
        raise ValueError(f"name must be a shipped classifier, one of {classifier_names()}; got {name!r}, which is "
                         f"a {kind} (load it with its own loader, e.g. load_diffusion or load_autoencoder)")
    return _classifier(name, str(torch.device(device)))


def classifier_names() -> list[str]:
    """The shipped checkpoints that are classifiers (``load_classifier`` loads them)."""
    return sorted(name for name, entry in manifest().items() if (entry["config"].get("model") or {}).get("kind")
                  == "classifier")


@lru_cache(maxsize=8)
def _autoencoder(name: str, device: str) -> Autoencoder:
    state, entry = load_state(name)
    return from_weights(entry["config"]["model"], state, device)


def load_autoencoder(name: str = "shapes_vae", device: Union[str, torch.device] = "cpu") -> Autoencoder:
    """The shipped ``Autoencoder`` (``minidiff.nn.autoencoder``) called ``name``, on ``device``, in eval mode,
    frozen, with its latent ``scale``: ``encode`` images into the latents a latent diffusion model trains on,
    ``decode`` its samples back. The file's SHA-256 is checked against the manifest first.

    Loaded once per (name, device) and then shared: do not train it in place (``copy.deepcopy`` it first).
    """
    entry = _entry(name, _root(None))
    if not _is_autoencoder(entry["config"]):
        raise ValueError(f"name must be a shipped autoencoder, one of {autoencoder_names()}; got {name!r}, which "
                         f"is a {entry['config'].get('model', {}).get('kind')} (load it with its own loader, e.g. "
                         f"load_diffusion or load_classifier)")
    return _autoencoder(name, str(torch.device(device)))


def autoencoder_names() -> list[str]:
    """The shipped checkpoints that are autoencoders (``load_autoencoder`` loads them)."""
    return sorted(name for name, entry in manifest().items() if _is_autoencoder(entry["config"]))


def _is_autoencoder(config: dict) -> bool:
    return (config.get("model") or {}).get("kind") == "autoencoder"


def manifest() -> dict[str, dict]:
    """The shipped checkpoints' manifest: recipe, metrics, SHA-256 and config of each."""
    _check_manifest_exists(_root(None))
    return read_manifest()


def diffusion_names() -> list[str]:
    """The shipped checkpoints that are diffusion models (``load_diffusion`` loads them)."""
    return sorted(name for name, entry in manifest().items() if _is_diffusion(entry["config"]))


def _is_diffusion(config: dict) -> bool:
    """One diffusion or flow-matching model (a file of training snapshots holds several: ``load_snapshots``)."""
    return (config.get("objective") or {}).get("kind") in GENERATIVE and "snapshots" not in config


GENERATIVE = ("diffusion", "flow", "reflow")          # the objectives whose models load_diffusion loads


def snapshot_names() -> list[str]:
    """The shipped files of training snapshots (``load_snapshots`` loads them)."""
    return sorted(name for name, entry in manifest().items() if "snapshots" in entry["config"])


def load_snapshots(name: str = "mnist_ema", device: Union[str, torch.device] = "cpu"
                   ) -> tuple[dict[str, nn.Module], NoiseSchedule, DiffusionConfig]:
    """The sets of weights one training run kept (``recipes.train_recipe``): ({"raw 1800": model, "ema 1800":
    model, …} in the order they were kept, each in eval mode and frozen, knowing its target; the schedule; the
    DiffusionConfig), on ``device``. The file's SHA-256 is checked against the manifest first."""
    entry = _entry(name, _root(None))
    if "snapshots" not in entry["config"]:
        raise ValueError(f"name must be a shipped file of training snapshots, one of {snapshot_names()}; got "
                         f"{name!r} (a single model: load it with load_diffusion or load_classifier)")
    state, entry = load_state(name)
    models, schedule, diffusion = {}, None, None
    for key in entry["config"]["snapshots"]:
        weights = {k[len(key) + 1:]: v for k, v in state.items() if k.startswith(key + ".")}
        models[key], schedule, diffusion = _diffusion(entry["config"]["model"], weights,
                                                      entry["config"]["objective"], device)
    return models, schedule, diffusion


def load_diffusion(name: str = "mnist_cond", device: Union[str, torch.device] = "cpu"
                   ) -> tuple[nn.Module, Union[NoiseSchedule, FlowPath], Union[DiffusionConfig, FlowConfig]]:
    """A shipped diffusion model: (U-Net with its EMA weights, eval mode and frozen, knowing its target;
    its schedule; its DiffusionConfig), on ``device``; for a flow-matching model (``mnist_flow``), (the U-Net,
    knowing it predicts the velocity "u"; its ``FlowPath``; its ``FlowConfig``). The file's SHA-256 is checked
    against the manifest first."""
    entry = _entry(name, _root(None))
    if not _is_diffusion(entry["config"]):
        raise ValueError(f"name must be a shipped diffusion model, one of {diffusion_names()}; got {name!r}, "
                         f"which is a {entry['config']['model']['kind']} (load it with its own loader, e.g. "
                         f"load_classifier, or load_snapshots for a file of training snapshots)")
    state, entry = load_state(name)
    return _diffusion(entry["config"]["model"], state, entry["config"]["objective"], device)


def load_trained(path: PathLike, device: Union[str, torch.device] = "cpu",
                 weights: Literal["ema", "model"] = "ema") -> tuple[nn.Module, NoiseSchedule, DiffusionConfig]:
    """(model in eval mode, schedule, DiffusionConfig) of a diffusion model from a training checkpoint
    (``Trainer.save``) or a model file (``Trainer.save_model``). ``weights`` = "ema" (the averaged
    weights, what to sample with) or "model" (the raw weights; training checkpoints only)."""
    state = load_checkpoint(path)
    if state.get("format") == TRAIN_FORMAT:
        description, objective = state["config"]["model"], state["config"]["objective"]
        stored = {"ema": state["ema"], "model": state["model"]}
    elif "weights" in state and "model" in state:
        description, objective, stored = state["model"], state.get("objective"), {"ema": state["weights"]}
    else:
        raise ValueError(f"{path} is not a minidiff training checkpoint or model file "
                         f"(format {state.get('format')!r})")
    if weights not in stored:
        raise ValueError(f"weights must be one of {sorted(stored)} for {path}; got {weights!r}")
    if not objective or objective.get("kind") not in GENERATIVE:
        raise ValueError(f"{path} holds a {description.get('kind')} trained with a "
                         f"{(objective or {}).get('kind', 'custom')} objective, not a diffusion model")
    return _diffusion(description, stored[weights], objective, device)


def _diffusion(description: dict, weights: dict, objective: dict, device: Union[str, torch.device]
               ) -> tuple[nn.Module, Union[NoiseSchedule, FlowPath], Union[DiffusionConfig, FlowConfig]]:
    if objective["kind"] in ("flow", "reflow"):     # a reflowed model is a flow model trained on pairs
        flow = FlowConfig(**objective["config"])
        return from_weights({**description, "target": "u"}, weights, device), FlowPath(), flow
    diffusion = DiffusionConfig(**objective["config"])
    model = from_weights({**description, "target": description.get("target") or diffusion.target}, weights, device)
    model.num_steps = diffusion.num_steps                # what it was trained on: the samplers check it
    schedule = diffusion.make_schedule(device)
    model.schedule = schedule                            # editing (md.sdedit, md.inpaint) finds it here
    return model, schedule, diffusion


# -- the course's last cell -----------------------------------------------------------------------
DEFAULT_GUIDANCE = 3.0           # used when the shipped model's manifest records no measured scale


@lru_cache(maxsize=4)
def _shipped_ldm(device: str) -> tuple[nn.Module, NoiseSchedule, nn.Module, float]:
    model, schedule, _ = load_diffusion("shapes_ldm", device)
    scale = manifest()["shapes_ldm"]["metrics"].get("guidance_scale", DEFAULT_GUIDANCE)
    return model, schedule, load_autoencoder("shapes_vae", device), scale


def text_to_image(prompts: Sequence[str], steps: int = 20, guidance_scale: Optional[float] = None,
                  generator: Optional[torch.Generator] = None, device: Optional[Union[str, torch.device]] = None,
                  dtype: Optional[torch.dtype] = None, init_images: Optional[Tensor] = None,
                  strength: Optional[float] = None, mask: Optional[Tensor] = None) -> Tensor:
    """Images (N, 3, 64, 64) in [-1, 1] of the captions ``prompts``, from the shipped ``shapes_ldm`` (a
    text-conditional U-Net on 4×16×16 latents) and ``shapes_vae`` (its decoder): DPM-Solver++ with
    ``steps`` network calls, classifier-free guidance at ``guidance_scale`` (None: the scale measured
    best for the shipped model, in its manifest entry). ``device``: the generator's, else "cpu".
    ``dtype=torch.bfloat16`` runs the U-Net under autocast (faster on a GPU; only when asked).

    Prompts use the Scenes grammar: "a large red circle at the top left", "a blue square and a small
    yellow cross"; a word outside it is a ValueError that lists the words there are.

    Editing (notebook 10), in latent space: with ``init_images`` (N, 3, 64, 64) and ``strength``, SDEdit of their
    latents towards the captions (``editing.sdedit``, DDIM); with ``init_images`` and ``mask`` (N or 1, 1, 64, 64;
    1 = generate), inpainting of the latents (``editing.inpaint``) under the mask shrunk to the latent grid (a
    latent cell is generated when any of its pixels is), and the kept pixels pasted back as given."""
    if isinstance(prompts, str):
        raise TypeError(f"prompts must be a list of captions; got the single string {prompts!r} "
                        f"(wrap it: [{prompts!r}])")
    if not prompts:
        raise ValueError("prompts must hold at least one caption; got none")
    device = torch.device(device if device is not None else generator.device if generator is not None else "cpu")
    model, schedule, autoencoder, default_scale = _shipped_ldm(str(device))
    tokens = caption_tokenizer(model.config.max_tokens).encode(list(prompts))
    scale = default_scale if guidance_scale is None else guidance_scale
    if init_images is None:
        if strength is not None or mask is not None:
            raise ValueError("strength and mask edit init_images: pass init_images (N, 3, 64, 64) too")
        return sample_images(model, schedule, autoencoder, tokens, steps, scale, generator=generator, dtype=dtype)
    return _edit_latents(model, schedule, autoencoder, tokens.to(device), init_images, strength, mask, steps, scale,
                         generator)


def _edit_latents(model: nn.Module, schedule: NoiseSchedule, autoencoder: nn.Module, tokens: Tensor,
                  init_images: Tensor, strength: Optional[float], mask: Optional[Tensor], steps: int, scale: float,
                  generator: Optional[torch.Generator]) -> Tensor:
    """``text_to_image``'s editing: SDEdit (``strength``) or inpainting (``mask``) of ``init_images``' latents."""
    init_images = check_images(init_images, "init_images").to(schedule.device)
    if len(init_images) != len(tokens):
        raise ValueError(f"init_images must hold one image per prompt ({len(tokens)}); got {len(init_images)}")
    if (strength is None) == (mask is None):
        raise ValueError("init_images needs exactly one of strength (SDEdit: how much to redraw, in (0, 1]) and mask "
                         f"(inpainting: 1 = generate); got strength={strength!r} and "
                         f"{'a mask' if mask is not None else 'no mask'}")
    z = encode_images(autoencoder, init_images)
    if strength is not None:
        edited = sdedit(model, z, check_strength(strength), steps, tokens, scale, generator, schedule)
        return decode_latents(autoencoder, edited)
    mask = check_mask(mask, init_images)
    latent_mask = (torch.nn.functional.adaptive_max_pool2d(mask, z.shape[-2:]) > 0).to(z.dtype)
    edited = decode_latents(autoencoder, inpaint(model, z, latent_mask, steps, tokens, scale, generator, schedule))
    return mask * edited + (1 - mask) * init_images


# -- any shipped model, with its own sampler --------------------------------------------------------
DEFAULT_STEPS = {"diffusion": 20, "flow": 16, "reflow": 2}   # DPM-Solver++(2M) 20 calls; flow Euler 16 (RESULTS.md)


def generate(name: str, labels: Union[Tensor, Sequence[str], None] = None, n: Optional[int] = None,
             steps: Optional[int] = None, guidance_scale: Optional[float] = None,
             generator: Optional[torch.Generator] = None) -> Tensor:
    """Images (N, C, H, W) in [-1, 1] from the shipped generative model ``name``, with its own default sampler:
    DPM-Solver++(2M) with 20 calls for a diffusion model, 16 Euler steps for a flow model (``mnist_flow``), and
    ``text_to_image`` for the text model (``shapes_ldm``: ``labels`` are then captions). ``labels``: the class
    labels (a LongTensor, (N,) or (N, K)), or None for ``n`` images running through the classes in turn (16 by
    default). ``guidance_scale``: None samples the conditional model without guidance (the text model: its
    measured best scale). On the generator's device (else the CPU)."""
    entry = _entry(name, _root(None))
    if not _is_diffusion(entry["config"]):
        raise ValueError(f"name must be a shipped generative model, one of {diffusion_names()}; got {name!r}, which "
                         f"is a {entry['config']['model']['kind']}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be an int >= 1 (network calls); got {steps!r}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be an int >= 1 (how many images); got {n!r}")
    device = generator.device if generator is not None else torch.device("cpu")
    if entry["config"]["model"].get("config", {}).get("vocab_size") is not None:
        if labels is None or isinstance(labels, (str, Tensor)):
            raise TypeError(f"{name} draws captions: labels must be a list of captions, e.g. ['a red circle']; "
                            f"got {type(labels).__name__}")
        return text_to_image(list(labels), steps or DEFAULT_STEPS["diffusion"], guidance_scale, generator, device)
    model, path, _ = load_diffusion(name, str(device))
    null = getattr(model, "null_label", None)
    if labels is None and null is not None:
        labels = labels_in_turn(n or 16, null_label(model)).to(device)
    count = len(labels) if labels is not None else n or 16
    if labels is not None and n is not None and n != count:
        raise ValueError(f"n must match the number of labels ({count}) when both are given; got n={n}")
    shape = (count, model.config.in_channels, model.config.image_size, model.config.image_size)
    kind = entry["config"]["objective"]["kind"]
    if kind in ("flow", "reflow"):
        return flow_sample(model, shape, steps or DEFAULT_STEPS[kind], y=labels, guidance_scale=guidance_scale,
                           generator=generator).clamp(-1, 1)
    return dpm_solver_sample(model, path, shape, steps or DEFAULT_STEPS[kind], y=labels, guidance_scale=guidance_scale,
                             generator=generator).clamp(-1, 1)
