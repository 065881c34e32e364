r"""Editing with a trained model (notebook 10): change an image instead of drawing a new one.

**SDEdit** (Meng et al. 2022): noise the image part of the way,
$x_{t_0} = \alpha_{t_0} x + \sigma_{t_0}\varepsilon$, and let the model denoise it from there, with the same or
another condition. The *strength* $t_0$ trades faithfulness (little noise: the image survives) against realism
and obedience to the new condition (much noise: the model redraws it). With ``steps`` sampler steps and
strength $s$ the run is the last $\lceil s \cdot \text{steps} \rceil$ steps of the full ``steps``-step run, as in
diffusers' img2img.

**Inpainting** by replacement (the baseline of Lugmayr et al. 2022): at every step the pixels to keep are
replaced by the original noised to the same level, $x \leftarrow m \odot x + (1 - m) \odot q(x_{t'} \mid x)$,
mask $m = 1$ where the model generates and $0$ where it keeps (diffusers' convention). **RePaint**'s
resampling (``resample`` > 1) jumps back up one step and redoes it, so the generated part can adapt to the
kept part it only saw through noise. The kept pixels are returned exactly as given.

Both run on a diffusion model (DDIM over ``samplers.ddim_timesteps``, $\eta = 0$ for SDEdit, $\eta = 1$ for
inpainting) or on a flow model (Euler on the straight path, ``flow``), the two kinds of one path.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from .conditioning import FLOW_TARGET, unwrap
from .diffusion import q_sample
from .flow import _velocity_fn, euler_step, flow_interpolate
from .progress import progress_bar
from .samplers import GuidanceArg, ddim_step, ddim_timesteps, prepare
from .schedules import NoiseSchedule

Model = Callable[..., Tensor]


# -- the checks at the door --------------------------------------------------------------------------
def check_strength(strength: object) -> float:
    """SDEdit's strength: a number in (0, 1] (1: start from pure noise; the image then only fixes the noise)."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < strength <= 1:
        raise ValueError(f"strength must be a number in (0, 1] (the share of the sampler's steps to redo; 1 starts "
                         f"from pure noise); got {strength!r}")
    return float(strength)


def check_images(images: object, name: str = "images") -> Tensor:
    if not isinstance(images, Tensor) or not images.is_floating_point() or images.ndim != 4:
        got = (f"shape {tuple(images.shape)}, dtype {images.dtype}" if isinstance(images, Tensor)
               else type(images).__name__)
        raise ValueError(f"{name} must be a float tensor (N, C, H, W) in [-1, 1]; got {got}")
    return images


def check_mask(mask: object, images: Tensor) -> Tensor:
    """The mask: (N or 1, 1, H, W), values in [0, 1] (1: generate, 0: keep), as a float tensor like the images."""
    n, _, h, w = images.shape
    if not isinstance(mask, Tensor) or mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[2:] != (h, w) \
            or mask.shape[0] not in (1, n):
        got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a tensor of shape ({n} or 1, 1, {h}, {w}) (1: generate, 0: keep); got {got}")
    mask = mask.to(images.device, images.dtype)
    if bool(((mask < 0) | (mask > 1)).any()):
        raise ValueError(f"mask values must be in [0, 1] (1: generate, 0: keep); got values in "
                         f"[{mask.min().item():g}, {mask.max().item():g}]")
    return mask


def _schedule_of(model: Model, schedule: Optional[NoiseSchedule], device: torch.device) -> Optional[NoiseSchedule]:
    """The diffusion schedule to edit with: the one given, else the model's own (``load_diffusion`` attaches it);
    None for a flow model (its path is fixed)."""
    if getattr(unwrap(model), "target", None) == FLOW_TARGET:
        return None
    schedule = schedule if schedule is not None else getattr(unwrap(model), "schedule", None)
    if schedule is None:
        raise ValueError("schedule is needed for this diffusion model (it does not carry one): pass schedule=s, the "
                         "schedule it was trained on (md.load_diffusion returns it)")
    return schedule.to(device)


# -- SDEdit ------------------------------------------------------------------------------------------
def sdedit_positions(num_steps: int, strength: float, steps: int) -> list[int]:
    r"""The positions an SDEdit run visits: the last $k = \lceil \text{strength}\cdot\text{steps}\rceil$ of the
    ``steps`` trailing DDIM positions, largest first. The image is noised to the first of them."""
    positions = ddim_timesteps(num_steps, steps)
    k = min(steps, max(1, math.ceil(strength * steps - 1e-9)))
    return positions[steps - k:]


def sdedit_start(images: Tensor, position: int, s: NoiseSchedule, noise: Tensor) -> Tensor:
    r"""The SDEdit start: the image noised to ``position`` in one jump,
    $x_t = \sqrt{\bar\alpha_t}\,x + \sqrt{1-\bar\alpha_t}\,\varepsilon$ (``q_sample``), with fresh noise
    $\varepsilon$: not the model's, not the image's own."""
    return q_sample(images, position, s, noise)


@torch.no_grad()
def sdedit(model: Model, images: Tensor, strength: float, steps: int = 50, y: Optional[Tensor] = None,
           guidance_scale: GuidanceArg = None, generator: Optional[torch.Generator] = None,
           schedule: Optional[NoiseSchedule] = None, eta: float = 0.0, progress: Optional[bool] = None) -> Tensor:
    r"""SDEdit (Meng et al. 2022): ``images`` (N, C, H, W) in [−1, 1] noised to the level ``strength`` and denoised
    by ``model`` with labels ``y`` (guided at ``guidance_scale``). A diffusion model runs the last
    $\lceil$strength·steps$\rceil$ of ``steps`` DDIM steps ($\eta$ = ``eta``) on its schedule (``schedule``, else the
    one ``load_diffusion`` attached); a flow model starts at $t_0$ = strength,
    $x_{t_0} = (1 - t_0)x + t_0\varepsilon$, and takes $\lceil$strength·steps$\rceil$ Euler steps to $t = 0$. Noise
    from ``generator`` (on the images' device); ``progress``: a bar over the steps (``minidiff.progress``)."""
    images, strength = check_images(images), check_strength(strength)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1; got {steps!r}")
    noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    s = _schedule_of(model, schedule, images.device)
    if s is None:
        k = min(steps, max(1, math.ceil(strength * steps - 1e-9)))
        times = torch.linspace(strength, 0, k + 1).tolist()
        return _euler(model, flow_interpolate(images, noise, strength), times, y, guidance_scale, progress=progress)
    positions = sdedit_positions(s.num_steps, strength, steps)
    x = sdedit_start(images, positions[0], s, noise)
    return _ddim(model, s, x, positions, y, guidance_scale, eta, generator, progress=progress)


def _ddim(model: Model, s: NoiseSchedule, x: Tensor, positions: list[int], y: Optional[Tensor],
          guidance_scale: GuidanceArg, eta: float, generator: Optional[torch.Generator],
          progress: Optional[bool] = None) -> Tensor:
    """SDEdit's DDIM: from ``x`` at ``positions[0]`` through ``positions`` to −1."""
    denoise = prepare(model, s, tuple(x.shape), y, guidance_scale)
    for t, t_prev in progress_bar(list(zip(positions, positions[1:] + [-1])), progress, "SDEdit", leave=False):
        eps, x0 = denoise(x, t, s)
        noise = torch.randn(x.shape, device=x.device, generator=generator, dtype=x.dtype) if eta > 0 else None
        x = ddim_step(x, eps, t, t_prev, s, eta, noise, x0=x0)
    return x


def _euler(model: Model, x: Tensor, times: list[float], y: Optional[Tensor], guidance_scale: GuidanceArg,
           after_step: Optional[Callable[[Tensor, float], Tensor]] = None, progress: Optional[bool] = None,
           desc: str = "SDEdit") -> Tensor:
    velocity = _velocity_fn(model, y, guidance_scale)
    for t, t_next in progress_bar(list(zip(times[:-1], times[1:])), progress, desc, leave=False):
        x = euler_step(x, velocity(x, t), t, t_next)
        if after_step is not None:
            x = after_step(x, t_next)
    return x


# -- inpainting --------------------------------------------------------------------------------------
def inpaint_merge(x_generated: Tensor, known_noised: Tensor, mask: Tensor) -> Tensor:
    r"""One inpainting merge: $m \odot x_{\text{generated}} + (1 - m) \odot x_{\text{known}}$, the model's pixels where
    the mask is 1, the original's (noised to the same level) where it is 0."""
    return mask * x_generated + (1 - mask) * known_noised


def renoise_step(x: Tensor, t_from: int, t_to: int, s: NoiseSchedule, noise: Tensor) -> Tensor:
    r"""Back up the path from position ``t_from`` to ``t_to`` > ``t_from`` (−1 is the clean image):
    $x_{t} = \sqrt{\bar\alpha_t/\bar\alpha_{t'}}\,x_{t'} + \sqrt{1 - \bar\alpha_t/\bar\alpha_{t'}}\,\varepsilon$,
    the forward jump $q(x_t \mid x_{t'})$ that RePaint's resampling takes."""
    abar_from = 1.0 if t_from < 0 else s.alphas_cumprod[t_from].item()
    ratio = s.alphas_cumprod[t_to].item() / abar_from
    return math.sqrt(ratio) * x + math.sqrt(1 - ratio) * noise


@torch.no_grad()
def inpaint(model: Model, images: Tensor, mask: Tensor, steps: int = 50, y: Optional[Tensor] = None,
            guidance_scale: GuidanceArg = None, generator: Optional[torch.Generator] = None,
            schedule: Optional[NoiseSchedule] = None, resample: int = 1, progress: Optional[bool] = None) -> Tensor:
    r"""Fill the region ``mask`` = 1 of ``images`` (N, C, H, W) in [−1, 1]; ``mask`` (N or 1, 1, H, W), 0 = keep.
    From pure noise, each of ``steps`` steps (DDIM with $\eta = 1$ on a diffusion model's schedule; Euler on a flow
    model) is followed by ``inpaint_merge`` with the original noised to the step's level (fresh noise each time).
    ``resample`` = r > 1 is RePaint's: each step is redone r times, backing up with ``renoise_step`` in between
    (a diffusion model only). The kept pixels are returned exactly as given. ``progress``: a bar over the steps."""
    images = check_images(images)
    mask = check_mask(mask, images)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1; got {steps!r}")
    if isinstance(resample, bool) or not isinstance(resample, int) or resample < 1:
        raise ValueError(f"resample must be an int >= 1 (1: replacement only; RePaint used 10); got {resample!r}")
    randn = lambda: torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    s = _schedule_of(model, schedule, images.device)
    x = randn()
    if s is None:
        if resample > 1:
            raise ValueError("resample > 1 is RePaint's resampling on a diffusion schedule; a flow model takes "
                             "resample=1")
        keep_flow = lambda x, t: inpaint_merge(x, flow_interpolate(images, randn(), t) if t > 0 else images, mask)
        x = keep_flow(x, 1.0)
        x = _euler(model, x, torch.linspace(1, 0, steps + 1).tolist(), y, guidance_scale, keep_flow, progress,
                   "inpaint")
        return inpaint_merge(x, images, mask)
    positions = ddim_timesteps(s.num_steps, steps)
    keep = lambda x, t: inpaint_merge(x, q_sample(images, t, s, randn()) if t >= 0 else images, mask)
    x = keep(x, positions[0])
    denoise = prepare(model, s, tuple(images.shape), y, guidance_scale)
    for t, t_prev in progress_bar(list(zip(positions, positions[1:] + [-1])), progress, "inpaint", leave=False):
        for r in range(resample):
            eps, x0 = denoise(x, t, s)
            x = keep(ddim_step(x, eps, t, t_prev, s, 1.0, randn(), x0=x0), t_prev)
            if r < resample - 1:
                x = renoise_step(x, t_prev, t, s, randn())
    return inpaint_merge(x, images, mask)
