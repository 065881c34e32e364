r"""Pictures of the forward process: image grids, noising strips, schedule curves, histograms, sliders.

One image convention everywhere: a batch ``(B, C, H, W)`` of floats in model range $[-1, 1]$, on any
device. Plotting is the one place that moves tensors to the CPU. ``C = 1`` is drawn in grayscale with
$-1$ black and $+1$ white, ``C = 3`` as RGB; values outside $[-1, 1]$ (noisy $x_t$) are clamped,
never rescaled, so two pictures of the same pixel values always look the same.

Every ``show_*`` / ``plot_*`` function returns its matplotlib Figure and does not call
``plt.show()``. In a notebook the inline backend draws a figure made with ``plt.subplots`` when the
cell ends, so end the line with ``;`` (or write ``_ = ...``) rather than letting the cell print the
returned Figure as well.

The widgets, ``t_slider``, ``schedule_compare_widget`` and ``gallery_slider``, each have a static twin that a notebook
draws just before them, so the saved page reads without a kernel:

    md.viz.show_forward_strip(x0, s);          # static: saved in the notebook
    md.viz.t_slider(x0, s)                     # live:   needs a kernel

    md.viz.show_schedule_comparison(schedules, x0);
    md.viz.schedule_compare_widget(schedules, x0)

    md.viz.show_grid(torch.cat(list(grids.values())), ...);
    md.viz.gallery_slider(grids)               # precomputed batches, one per slider position
"""
from __future__ import annotations

import html
import io
import math
from typing import Mapping, Optional, Sequence, Union

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from einops import rearrange
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator
from PIL import Image
from torch import Tensor

from ..data import to_pixel_range
from ..images import check_batch, grid_shape, image_grid, png_bytes
from ..diffusion import q_sample
from ..schedules import NoiseSchedule

Label = Union[int, str]


# -- checks and conversions ---------------------------------------------------------------------
def _check_images(images: Tensor, name: str = "images") -> Tensor:
    """``images`` detached, as float32 on the CPU, after ``images.check_batch``."""
    check_batch(images, name)
    return images.detach().float().cpu()


def _check_schedule(schedule: NoiseSchedule, name: str = "schedule") -> NoiseSchedule:
    """``schedule`` on the CPU (a copy only if it lives elsewhere)."""
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"{name} must be a minidiff.NoiseSchedule; got {type(schedule).__name__}")
    return schedule if schedule.device.type == "cpu" else schedule.to("cpu")


def _check_schedules(schedules: Mapping[str, NoiseSchedule]) -> dict[str, NoiseSchedule]:
    """The named schedules, each on the CPU; at least one."""
    if not isinstance(schedules, Mapping):
        raise TypeError(f"schedules must be a dict name -> NoiseSchedule; got {type(schedules).__name__}")
    if len(schedules) == 0:
        raise ValueError("schedules must name at least one schedule; got an empty dict")
    return {name: _check_schedule(s, f"schedules[{name!r}]") for name, s in schedules.items()}


def _check_noise(noise: Optional[Tensor], x0: Tensor) -> Tensor:
    """ε for ``x0`` (already on the CPU): the given ``noise`` moved to the CPU, or a fresh N(0, I) draw."""
    if noise is None:
        return torch.randn_like(x0)
    if not isinstance(noise, Tensor):
        raise TypeError(f"noise must be a torch.Tensor or None; got {type(noise).__name__}")
    if noise.shape != x0.shape:
        raise ValueError(f"noise must have the shape of x0, {tuple(x0.shape)}; got {tuple(noise.shape)}")
    return noise.detach().float().cpu()


def _default_ts(num_steps: int) -> tuple[int, ...]:
    """Seven steps from clean to pure noise: (0, 50, 100, 250, 500, 750, 999) when T = 1000."""
    T = num_steps
    return tuple(sorted({0, T // 20, T // 10, T // 4, T // 2, 3 * T // 4, T - 1}))


def _check_ts(ts: Optional[Sequence[int]], num_steps: int) -> list[int]:
    """``ts`` as a list of ints in [0, T−1]; the default seven steps when None."""
    if ts is None:
        return list(_default_ts(num_steps))
    ts = [int(t) for t in ts]
    if not ts:
        raise ValueError("ts must hold at least one timestep; got an empty sequence")
    bad = [t for t in ts if not 0 <= t < num_steps]
    if bad:
        raise ValueError(f"ts must be in [0, {num_steps - 1}] (0-indexed, T={num_steps}); got {bad}")
    return ts


# -- layout -------------------------------------------------------------------------------------
def _imshow(ax: plt.Axes, image: Tensor) -> None:
    """Draw one (C, H, W) image in [-1, 1] on ``ax``: fixed gray levels for C = 1, RGB for C = 3."""
    unit = to_pixel_range(image)
    if unit.shape[0] == 1:
        ax.imshow(unit[0].numpy(), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(rearrange(unit, "c h w -> h w c").numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _subplots(rows: int, cols: int, scale: float, row_extra: float = 0.0,
              extra: float = 0.0) -> tuple[Figure, np.ndarray]:
    """A figure of rows × cols square cells, ``scale`` inches each, plus ``row_extra`` inches per row
    (for labels) and ``extra`` in all (for titles); axes always as a 2-D array."""
    height = rows * (scale + row_extra) + extra
    return plt.subplots(rows, cols, figsize=(cols * scale, height), squeeze=False)


# -- static figures -----------------------------------------------------------------------------
def show_grid(images: Tensor, labels: Union[Sequence[Label], Tensor, None] = None, nrow: Optional[int] = None,
              title: Optional[str] = None, scale: float = 1.2) -> Figure:
    """A grid of images, one small axes each, with an optional label (int or str) above each image.

    ``labels`` may be a list or a 1-D tensor of class indices (e.g. ``y[:16]``).

    ``nrow`` is the number of images per row; ``scale`` the size of one image in inches.
    """
    images = _check_images(images)
    if isinstance(labels, Tensor):
        labels = labels.tolist()
    if labels is not None and len(labels) != images.shape[0]:
        raise ValueError(f"labels must have one entry per image ({images.shape[0]}); got {len(labels)}")
    rows, cols = grid_shape(images.shape[0], nrow)
    fig, axes = _subplots(rows, cols, scale, row_extra=0.25 if labels is not None else 0.0,
                          extra=0.4 if title else 0.0)
    for i, ax in enumerate(axes.flat):
        if i >= images.shape[0]:
            ax.axis("off")
            continue
        _imshow(ax, images[i])
        if labels is not None:
            ax.set_title(str(labels[i]), fontsize=9, pad=2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _noised(x0: Tensor, s: NoiseSchedule, ts: Sequence[int], noise: Tensor) -> list[Tensor]:
    """x_t for each t in ``ts``, all from the same x_0 and the same ε (so they form one progression)."""
    return [q_sample(x0, t, s, noise) for t in ts]


def _step_title(s: NoiseSchedule, t: int) -> str:
    r"""'t=250' over '√ᾱ=0.78': how much of x_0's amplitude is left at step t."""
    return f"t={t}\n√ᾱ={s.sqrt_alphas_cumprod[t].item():.2f}"


def show_forward_strip(x0: Tensor, schedule: NoiseSchedule, ts: Optional[Sequence[int]] = None,
                       noise: Optional[Tensor] = None, title: Optional[str] = None, scale: float = 1.2) -> Figure:
    r"""Rows: the images of ``x0``; columns: $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$
    at each t in ``ts`` (default 0, 50, 100, 250, 500, 750, 999 for T = 1000).

    The same ε is used in every column, so a row is one smooth walk from the image to noise.
    """
    x0 = _check_images(x0, "x0")
    s = _check_schedule(schedule)
    ts = _check_ts(ts, s.num_steps)
    xs = _noised(x0, s, ts, _check_noise(noise, x0))
    fig, axes = _subplots(x0.shape[0], len(ts), scale, extra=0.5 + (0.4 if title else 0.0))
    for col, (t, x_t) in enumerate(zip(ts, xs)):
        axes[0, col].set_title(_step_title(s, t), fontsize=9)
        for row in range(x0.shape[0]):
            _imshow(axes[row, col], x_t[row])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def show_schedule_comparison(schedules: Mapping[str, NoiseSchedule], x0: Tensor,
                             ts: Optional[Sequence[int]] = None, noise: Optional[Tensor] = None,
                             scale: float = 1.4) -> Figure:
    r"""Rows: schedules; columns: t. Each cell shows $x_t$ of all of ``x0`` side by side, from the same
    ε, with $\sqrt{\bar\alpha_t}$ and log-SNR underneath: the static twin of ``schedule_compare_widget``.
    ``ts`` are positions (as everywhere in minidiff); the column titles are step numbers, position + 1.
    """
    schedules = _check_schedules(schedules)
    x0 = _check_images(x0, "x0")
    noise = _check_noise(noise, x0)
    T = min(s.num_steps for s in schedules.values())
    ts = _check_ts(ts, T)
    # one cell holds B images side by side; shrink them so the figure stays notebook-wide (≤ 14 in)
    scale = min(scale, 14.0 / (len(ts) * x0.shape[0]))
    fig, axes = plt.subplots(len(schedules), len(ts), squeeze=False,
                             figsize=(len(ts) * x0.shape[0] * scale, len(schedules) * (scale + 0.5) + 0.4))
    for row, (name, s) in enumerate(schedules.items()):
        axes[row, 0].set_ylabel(name, fontsize=11)
        for col, (t, x_t) in enumerate(zip(ts, _noised(x0, s, ts, noise))):
            ax = axes[row, col]
            _imshow(ax, rearrange(image_grid(x_t, nrow=x0.shape[0], pad=1), "h w c -> c h w"))
            ax.set_xlabel(f"√ᾱ={s.sqrt_alphas_cumprod[t].item():.2f}\nlog-SNR={s.log_snr[t].item():+.2f}",
                          fontsize=8)
            if row == 0:
                ax.set_title(f"t = {t + 1}", fontsize=10)          # step t + 1 sits at position t
    fig.tight_layout()
    return fig


def plot_schedules(schedules: Mapping[str, NoiseSchedule]) -> Figure:
    r"""Three panels against the step t = 1 … T, one line per named schedule: $\beta_t$ (log scale),
    $\bar\alpha_t$ and $\log \mathrm{SNR}(t) = \log\big(\bar\alpha_t / (1-\bar\alpha_t)\big)$ (a zero terminal
    SNR's $-\infty$ at t = T is left out of the line)."""
    schedules = _check_schedules(schedules)
    fig, (ax_beta, ax_abar, ax_snr) = plt.subplots(1, 3, figsize=(13, 3.8))
    for name, s in schedules.items():
        t = np.arange(1, s.num_steps + 1)                     # step t sits at position t − 1
        ax_beta.plot(t, s.betas.numpy(), label=name)
        ax_abar.plot(t, s.alphas_cumprod.numpy(), label=name)
        ax_snr.plot(t, s.log_snr.numpy(), label=name)
    ax_beta.set(yscale="log", ylabel=r"$\beta_t$", title="noise added per step")
    ax_beta.yaxis.set_major_locator(LogLocator(base=10))      # one labelled tick per decade: 10⁻⁴ … 10⁰
    ax_beta.yaxis.set_major_formatter(FuncFormatter(_power_of_ten))
    ax_abar.set(ylabel=r"$\bar\alpha_t$", title="signal variance left", ylim=(-0.03, 1.03))
    ax_snr.set(ylabel=r"$\log\,\mathrm{SNR}(t)$", title="log signal-to-noise ratio")
    for ax in (ax_beta, ax_abar, ax_snr):
        ax.set_xlabel("step t")
        ax.tick_params(labelsize=10)
        ax.grid(alpha=0.3)
    ax_abar.legend(loc="lower left")
    fig.tight_layout()
    return fig


def _power_of_ten(value: float, position: int) -> str:
    """A log axis's tick label, '10⁻³' in plain text (readable at any font size, unlike small mathtext)."""
    exponent = round(math.log10(value)) if value > 0 else 0
    if value <= 0 or not math.isclose(value, 10.0 ** exponent):
        return ""
    return "1" if exponent == 0 else "10" + str(exponent).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))


def _histogram(ax: plt.Axes, x: Tensor, bins: int) -> None:
    r"""Density histogram of the values of ``x`` on ``ax``, with the $\mathcal N(0, 1)$ pdf over it."""
    values = x.detach().float().cpu().flatten().numpy()
    lo, hi = min(-4.0, float(values.min())), max(4.0, float(values.max()))
    ax.hist(values, bins=bins, range=(lo, hi), density=True, color="tab:blue", alpha=0.6, label="pixels")
    grid = np.linspace(lo, hi, 400)
    ax.plot(grid, np.exp(-grid ** 2 / 2) / math.sqrt(2 * math.pi), color="black", lw=1.5,
            label=r"$\mathcal{N}(0, 1)$")
    ax.text(0.03, 0.97, f"mean {values.mean():+.2f}\nstd {values.std():.2f}", transform=ax.transAxes,
            va="top", fontsize=8)
    ax.set_xlabel("pixel value")


def plot_histogram(x: Tensor, title: Optional[str] = None, bins: int = 60) -> Figure:
    r"""Histogram (density) of all values of ``x`` (any shape) against the $\mathcal N(0, 1)$ density."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor; got {type(x).__name__}")
    if x.numel() == 0:
        raise ValueError(f"x must hold at least one value; got shape {tuple(x.shape)}")
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    _histogram(ax, x, bins)
    ax.set_ylabel("density")
    ax.legend(loc="upper right", fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_histograms_over_t(x0: Tensor, schedule: NoiseSchedule, ts: Optional[Sequence[int]] = None,
                           noise: Optional[Tensor] = None, bins: int = 60) -> Figure:
    r"""One panel per t: the histogram of the pixels of $x_t$ drifting from the data's to $\mathcal N(0, 1)$.

    Four panels a row, each with its own y axis: the clean images' histogram is spiky.
    """
    x0 = _check_images(x0, "x0")
    s = _check_schedule(schedule)
    ts = _check_ts(ts, s.num_steps)
    xs = _noised(x0, s, ts, _check_noise(noise, x0))
    rows, cols = grid_shape(len(ts), nrow=4)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat[len(ts):]:
        ax.axis("off")
    for ax, t, x_t in zip(axes.flat, ts, xs):
        _histogram(ax, x_t, bins)
        ax.set_title(f"t={t}  (√ᾱ={s.sqrt_alphas_cumprod[t].item():.2f})", fontsize=9)
    for ax in axes[:, 0]:
        ax.set_ylabel("density")
    axes.flat[len(ts) - 1].legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    return fig


# -- widgets ------------------------------------------------------------------------------------
def _step_text(s: NoiseSchedule, t: int) -> str:
    """'ᾱ_t = 0.6129   √ᾱ_t = 0.78   SNR = 1.58   log-SNR = +0.46' for step t."""
    abar = s.alphas_cumprod[t].item()
    return (f"ᾱ_t = {abar:.4f}   √ᾱ_t = {math.sqrt(abar):.3f}   SNR = {s.snr(t).item():.3g}   "
            f"log-SNR = {s.log_snr[t].item():+.2f}")


def _slider(T: int, t_max: Optional[int], step: int, description: str) -> widgets.IntSlider:
    """An IntSlider over t ∈ [0, t_max] (t_max defaults to T − 1), updating while it is dragged."""
    t_max = T - 1 if t_max is None else t_max
    if not 0 <= t_max < T:
        raise ValueError(f"t_max must be in [0, {T - 1}] (T={T}); got {t_max}")
    if step < 1:
        raise ValueError(f"step must be >= 1; got {step}")
    return widgets.IntSlider(value=0, min=0, max=t_max, step=step, description=description,
                             continuous_update=True, layout=widgets.Layout(width="520px"))


def _show_png(image: widgets.Image, png: bytes) -> None:
    """Put ``png`` into the widget at its own pixel width (JupyterLab would stretch it to the page)."""
    image.value = png
    image.layout.width = f"{Image.open(io.BytesIO(png)).size[0]}px"


def t_slider(x0: Tensor, schedule: NoiseSchedule, noise: Optional[Tensor] = None, t_max: Optional[int] = None,
             step: int = 1, description: str = "t", nrow: Optional[int] = None, zoom: int = 4) -> widgets.VBox:
    r"""A slider over t showing $x_t$ = ``q_sample(x0, t, schedule, noise)`` for the images of ``x0``.

    Returns ``VBox(children=(slider, image, caption))``: an ``IntSlider``, an ``Image`` (PNG) that is
    redrawn in place when the slider moves, and a ``Label`` with ᾱ_t and the SNR. The same ε is used
    for every t. Needs a kernel; draw ``show_forward_strip`` before it as the static fallback.
    """
    x0 = _check_images(x0, "x0")
    s = _check_schedule(schedule)
    noise = _check_noise(noise, x0)
    slider = _slider(s.num_steps, t_max, step, description)
    image = widgets.Image(format="png")
    caption = widgets.Label()

    def redraw(change: Optional[dict] = None) -> None:
        _show_png(image, png_bytes(q_sample(x0, slider.value, s, noise), nrow=nrow or x0.shape[0], zoom=zoom))
        caption.value = f"t = {slider.value}   " + _step_text(s, slider.value)

    redraw()
    slider.observe(redraw, names="value")
    return widgets.VBox([slider, image, caption])


def schedule_compare_widget(schedules: Mapping[str, NoiseSchedule], x0: Tensor, noise: Optional[Tensor] = None,
                            zoom: int = 3) -> widgets.VBox:
    r"""One slider over t; beside each other, for each named schedule, $x_t$ of the same ``x0`` and ε.

    Returns ``VBox(children=(slider, HBox(panels)))``; each panel is ``VBox((name, image, caption))``
    with an ``HTML`` name, an ``Image`` and a ``Label`` holding √ᾱ_t and log-SNR(t). All schedules
    must have the same T. The slider shows the step t = 1 … T (position t − 1). The static fallback is
    ``show_schedule_comparison``.
    """
    schedules = _check_schedules(schedules)
    x0 = _check_images(x0, "x0")
    noise = _check_noise(noise, x0)
    steps = {name: s.num_steps for name, s in schedules.items()}
    if len(set(steps.values())) != 1:
        raise ValueError(f"schedules must all have the same number of steps T; got {steps}")
    T = next(iter(steps.values()))
    slider = widgets.IntSlider(value=1, min=1, max=T, step=1, description="step t", continuous_update=True,
                               layout=widgets.Layout(width="520px"))
    panels = [(s, widgets.Image(format="png"), widgets.Label()) for s in schedules.values()]

    def redraw(change: Optional[dict] = None) -> None:
        i = slider.value - 1                                  # step t sits at position t − 1
        for s, image, caption in panels:
            _show_png(image, png_bytes(q_sample(x0, i, s, noise), nrow=x0.shape[0], zoom=zoom))
            caption.value = f"√ᾱ_t = {s.sqrt_alphas_cumprod[i].item():.3f}   log-SNR = {s.log_snr[i].item():+.2f}"

    redraw()
    slider.observe(redraw, names="value")
    boxes = [widgets.VBox([widgets.HTML(f"<b>{html.escape(name)}</b>"), image, caption],
                          layout=widgets.Layout(margin="0 16px 0 0"))
             for name, (_, image, caption) in zip(schedules, panels)]
    return widgets.VBox([slider, widgets.HBox(boxes)])


def gallery_slider(grids: Mapping[str, Tensor], description: str = "w", captions: Optional[Mapping[str, str]] = None,
                   nrow: Optional[int] = None, zoom: int = 3) -> widgets.VBox:
    """A slider over the keys of ``grids`` (e.g. guidance scales "0", "1", "2"), showing that key's batch
    of images, already computed, and its caption (e.g. the measured accuracy).

    Returns ``VBox(children=(slider, image, caption))`` with a ``SelectionSlider``. Nothing is sampled
    while it moves, so it is instant on a CPU. Needs a kernel; draw the same grids with ``show_grid``
    before it as the static fallback.
    """
    if not grids:
        raise ValueError("grids must hold at least one batch of images; got none")
    grids = {str(key): _check_images(images, f"grids[{key!r}]") for key, images in grids.items()}
    captions = {str(key): text for key, text in (captions or {}).items()}
    slider = widgets.SelectionSlider(options=list(grids), value=next(iter(grids)), description=description,
                                     continuous_update=True, layout=widgets.Layout(width="520px"))
    image, caption = widgets.Image(format="png"), widgets.Label()

    def redraw(change: Optional[dict] = None) -> None:
        images = grids[slider.value]
        _show_png(image, png_bytes(images, nrow=nrow or images.shape[0], zoom=zoom))
        caption.value = f"{description} = {slider.value}   " + captions.get(slider.value, "")

    redraw()
    slider.observe(redraw, names="value")
    return widgets.VBox([slider, image, caption])
