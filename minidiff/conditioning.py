r"""What a denoiser is given and what it returns, and every check on it, written once.

A denoiser is called ``model(x_t, t, y)``:

    x_t   a float tensor (B, …), the noisy image
    t     where on the path x_t lies: a position in {0, …, T−1} of a discrete schedule (step t + 1)
    y     its condition: None, class labels (B,), one label per attribute (B, K), or a caption's
          token ids (B, L); each kind has a **null label** that means "not given" (``null_label``)

and returns a prediction of its ``target``: "eps" (ε), "x0" or "v". This module owns that vocabulary
(``Null``, ``NullCaption``, ``null_label``, ``label_shape``, ``labels_in_turn``, ``drop_labels``), the
model's guided output every sampler calls (``guided_output``, ``ClassifierFree``, ``cfg_mix``),
``unwrap`` (the model inside DDP / torch.compile), and the checks every public entry point runs at
its door (``check_labels``, ``check_timesteps``, ``check_target``, ``check_float``,
``check_same_shape``, ``same_device``). Below the door, the code is the equations.

It sits first in the course order: the schedules, the forward process, the networks, the losses,
the samplers and guidance all import it, and it imports nothing of minidiff.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional, Union

import torch
from torch import Tensor, nn

Target = Literal["eps", "x0", "v"]
TARGETS = ("eps", "x0", "v")
# A flow-matching network (notebook 09) predicts the velocity u = ε − x_0 of the straight path instead: a model may
# carry it (model.target = "u"), and only minidiff.flow's sampler reads it.
FLOW_TARGET = "u"
Timesteps = Union[int, Tensor]


# -- the model inside its wrappers ---------------------------------------------------------------
def unwrap(model: Any) -> Any:
    """The module inside DistributedDataParallel (``.module``) and torch.compile (``._orig_mod``)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


# -- what a network predicts ---------------------------------------------------------------------
def check_target(target: Optional[str], allow_none: bool = False, allow_flow: bool = False) -> Optional[Target]:
    """``target`` after checking it is one of TARGETS (or None, or the flow velocity "u", where allowed)."""
    if target is None and allow_none or target == FLOW_TARGET and allow_flow:
        return target
    if target not in TARGETS:
        extra = (" or None" if allow_none else "") + (f" or {FLOW_TARGET!r} (a flow model)" if allow_flow else "")
        raise ValueError(f"target must be one of {TARGETS}{extra}; got {target!r}")
    return target


def model_target(model: Any) -> Optional[Target]:
    """What ``model`` says it predicts (its ``target`` attribute: "eps", "x0" or "v"), or None."""
    return getattr(unwrap(model), "target", None)


def resolve_target(model: Any, target: Optional[str] = None) -> Target:
    """The target to read ``model``'s output as: ``target`` if given, else the model's own, else "eps"
    (DDPM's default). A ``target`` that contradicts the model's own is a ValueError naming both."""
    own = model_target(model)
    if own == FLOW_TARGET:
        raise ValueError("this model predicts the flow velocity u = ε − x_0 (flow matching, notebook 09), not a "
                         "diffusion target: sample it with md.flow_sample (or md.generate for a shipped model)")
    if target is None:
        return own or "eps"
    check_target(target)
    if own is not None and target != own:
        raise ValueError(f"target={target!r} contradicts the model, which predicts {own!r}: sampling it as "
                         f"{target!r} gives wrong images; leave target out to use the model's own")
    return target


# -- labels and their null label -----------------------------------------------------------------
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


def check_labels(y: Any, null: Optional[Null], batch: int, name: str = "y", values: bool = True) -> Tensor:
    """Labels for a conditional model, checked: a LongTensor of ``label_shape(null, batch)`` whose
    entries lie in [0, null] (column k in [0, null[k]] for several attributes; the null label itself
    means "not given"); token ids in [0, vocab_size) for captions. ``null=None`` (a model that does not
    say) checks the form only: (B,) or (B, K) int64. Anything else is a ValueError naming ``name``,
    what was expected and what came. The one place labels are checked. ``values=False`` checks the form
    only (no look at the values, so no device sync: what a network's forward does on CUDA)."""
    if isinstance(null, NullCaption):
        return _check_captions(y, null, batch, name, values)
    shape = label_shape(null, batch) if null is not None else None
    ok_shape = tuple(getattr(y, "shape", ())) == shape if shape else getattr(y, "ndim", 0) in (1, 2) \
        and len(y) == batch
    if not isinstance(y, Tensor) or y.dtype != torch.long or not ok_shape:
        want = shape or f"({batch},), or ({batch}, K) for K attributes"
        raise ValueError(f"{name} must be a LongTensor of shape {want}, one label per image"
                         f"{'' if isinstance(null, int) or null is None else ' and attribute'}; got "
                         f"{getattr(y, 'dtype', type(y).__name__)} {tuple(getattr(y, 'shape', ()))}")
    if null is None or not values or not y.numel() or not (bool((y < 0).any()) or bool((y > null_like(y, null)).any())):
        return y
    if isinstance(null, int):
        raise ValueError(f"{name} must hold labels in [0, {null - 1}] (or {null}, the null label); got values "
                         f"from {int(y.min())} to {int(y.max())}")
    raise ValueError(f"{name}[:, k] must hold labels in [0, n_k] for the attributes' class counts n = {null} "
                     f"(n_k is attribute k's null label); got columns ranging "
                     f"{[(int(c.min()), int(c.max())) for c in y.unbind(1)]}")


def _check_captions(y: Any, null: NullCaption, batch: int, name: str, values: bool) -> Tensor:
    shape = label_shape(null, batch)
    if not isinstance(y, Tensor) or y.dtype != torch.long or tuple(y.shape) != shape:
        raise ValueError(f"{name} must be a LongTensor of shape {shape}: one caption of {null.length} token ids "
                         f"per image (Tokenizer.encode makes them); got "
                         f"{getattr(y, 'dtype', type(y).__name__)} {tuple(getattr(y, 'shape', ()))}")
    if values and y.numel() and (bool((y < 0).any()) or bool((y >= null.vocab_size).any())):
        raise ValueError(f"{name} must hold token ids in [0, {null.vocab_size - 1}]; got values from "
                         f"{int(y.min())} to {int(y.max())}")
    return y


def check_model_labels(model: Any, y: Any, batch: int, name: str = "y") -> Tensor:
    """``check_labels`` against the null label ``model`` (unwrapped) declares; a model that declares none
    (a plain function) has its labels checked for their form only."""
    return check_labels(y, getattr(unwrap(model), "null_label", None), batch, name)


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


# -- tensors, timesteps, devices -----------------------------------------------------------------
def check_float(x: Any, name: str) -> None:
    """``x`` must be a floating tensor with a batch dimension."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor (e.g. float32 in [-1, 1]); got dtype {x.dtype}")
    if x.ndim < 1:
        raise ValueError(f"{name} must have a batch dimension first, shape (B, …); got a 0-d tensor")


def check_same_shape(y: Any, x: Tensor, y_name: str, x_name: str) -> None:
    """``y`` must be a floating tensor shaped like ``x`` and on its device: broadcasting a batch of 1
    against a batch of 4 would silently give wrong images."""
    check_float(y, y_name)
    if y.shape != x.shape:
        raise ValueError(f"{y_name} must have the shape of {x_name}, {tuple(x.shape)}; got {tuple(y.shape)}")
    if y.device != x.device:
        raise ValueError(f"{y_name} is on {y.device} but {x_name} is on {x.device}; move one explicitly")


def same_device(a: torch.device | str, b: torch.device | str) -> bool:
    """Whether two devices are the same one: "cuda" means the current CUDA device, so it equals "cuda:0"
    when that is current (``torch.device("cuda") != torch.device("cuda:0")`` in plain PyTorch)."""
    def canonical(d: torch.device | str) -> tuple[str, int]:
        d = torch.device(d)
        if d.index is not None:
            return d.type, d.index
        return d.type, torch.cuda.current_device() if d.type == "cuda" else 0
    return canonical(a) == canonical(b)


def check_timesteps(t: Timesteps, num_steps: int, batch: int | None = None,
                    device: torch.device | None = None) -> Tensor:
    """``t`` (positions: step t + 1) as a LongTensor (0-d or (B,)) after checking type, range, batch size
    and device."""
    if isinstance(t, bool) or not isinstance(t, (int, Tensor)):
        raise TypeError(f"t must be an int or a LongTensor; got {type(t).__name__}")
    if isinstance(t, int):
        if not 0 <= t < num_steps:        # checked here, on the host, for every device
            raise ValueError(f"t must be in [0, {num_steps - 1}] (positions of steps 1 … {num_steps}); got {t}")
        t = torch.tensor(t, device=device)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"t must hold integer timesteps (torch.long); got dtype {t.dtype}")
    if t.ndim > 1:
        raise ValueError(f"t must be an int or a 1-D tensor of shape (B,); got shape {tuple(t.shape)}")
    if device is not None and not same_device(t.device, device):
        raise ValueError(f"t is on {t.device} but the schedule is on {device}; create t on the same "
                         f"device (e.g. torch.full((B,), t, device=x.device))")
    if batch is not None and t.ndim == 1 and t.shape[0] != batch:
        raise ValueError(f"t has {t.shape[0]} entries but x has batch size {batch}; give one t per "
                         f"image or a single int")
    if t.is_cuda:   # a CUDA tensor is checked on the GPU, without a device-to-host sync on every call
        torch._assert_async(((t >= 0) & (t < num_steps)).all(), f"t must be in [0, {num_steps - 1}]")
    elif t.numel() and ((t < 0) | (t >= num_steps)).any():
        raise ValueError(f"t must be in [0, {num_steps - 1}] (positions of steps 1 … {num_steps}); got values "
                         f"from {t.min().item()} to {t.max().item()}")
    return t.long()


def check_position(t: Any, num_steps: int, name: str = "t", allow_minus_one: bool = False) -> int:
    """One position shared by the batch, as an int (a 0-d integer tensor is read; a (B,) tensor is a
    TypeError): in [0, T−1], or [−1, T−1] where −1 (step 0, the clean image) is allowed."""
    if isinstance(t, Tensor) and t.ndim == 0 and not t.is_floating_point():
        t = int(t)
    if isinstance(t, bool) or not isinstance(t, int):
        raise TypeError(f"{name} must be an int (one timestep for the whole batch); got "
                        f"{type(t).__name__}{tuple(t.shape) if isinstance(t, Tensor) else ''}")
    low = -1 if allow_minus_one else 0
    if not low <= t < num_steps:
        raise ValueError(f"{name} must be in [{low}, {num_steps - 1}] (T={num_steps}); got {t}")
    return t


# -- classifier-free guidance, the part every sampler needs (the variants are in minidiff.guidance) ----
Guidance = Callable[[Tensor, Tensor, int, Tensor], Tensor]     # (conditional, unconditional, position t, x_t) -> guided
MAX_SCALE = 1000.0


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


def check_scale(scale: float, name: str = "guidance_scale") -> float:
    """A real ``scale`` with |w| <= MAX_SCALE. NaN or ±inf would make every image NaN; far beyond the scales
    anyone guides with (1–20), ε̂_u + w(ε̂_c − ε̂_u) overflows the image's range by orders of magnitude
    (w = 1e6 gives values near 5e4 where the data lie in [-1, 1]): both are a ValueError."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) \
            or abs(scale) > MAX_SCALE:
        raise ValueError(f"{name} must be a finite number in [-{MAX_SCALE:g}, {MAX_SCALE:g}] (0: unconditional, "
                         f"1: conditional, > 1: guided; useful scales are about 1 to 20); got {scale!r}")
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
