r"""Pictures of the forward process: image grids, noising strips, schedule curves, histograms, sliders.

Labels use the papers' step numbers: "t = k" is the image after k forward steps (``step_label``), so
a column drawn from position i of a schedule's tables (``q_sample(x0, i, s)``) is "t = i + 1", and
"t = 0" is x_0 itself. Arguments named ``ts`` are positions, as everywhere in minidiff.

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

    mc.viz.show_forward_strip(x0, s);          # static: saved in the notebook
    mc.viz.t_slider(x0, s)                     # live:   needs a kernel

    mc.viz.show_schedule_comparison(schedules, x0);
    mc.viz.schedule_compare_widget(schedules, x0)

    mc.viz.show_grid(torch.cat(list(grids.values())), ...);
    mc.viz.gallery_slider(grids)               # precomputed batches, one per slider position
"""
from __future__ import annotations

import html
import io
import math
import textwrap
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
from ..diffusion import q_sample
from ..images import check_batch, grid_shape, image_grid, png_bytes
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
    """The positions of seven steps from nearly clean to pure noise: steps t = 1, 50, 100, 250, 500, 750,
    1000 (positions 0, 49, 99, 249, 499, 749, 999) when T = 1000."""
    T = num_steps
    steps = {1, T // 20, T // 10, T // 4, T // 2, 3 * T // 4, T}
    return tuple(sorted({max(k, 1) - 1 for k in steps}))


def step_label(step: int) -> str:
    """'t = 250': the label of the image after ``step`` forward steps (0 is x_0; position i is step i + 1)."""
    return f"t = {step}"


def _check_ts(ts: Optional[Sequence[int]], num_steps: int) -> list[int]:
    """``ts`` as a list of ints in [0, T−1]; the default seven steps when None."""
    if ts is None:
        return list(_default_ts(num_steps))
    ts = [int(t) for t in ts]
    if not ts:
        raise ValueError("ts must hold at least one timestep; got an empty sequence")
    bad = [t for t in ts if not 0 <= t < num_steps]
    if bad:
        raise ValueError(f"ts must be in [0, {num_steps - 1}] (positions of steps 1 … {num_steps}); got {bad}")
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
# Text in a grid stays readable at the size a figure is shown: the inline backend draws at 100 dpi; JupyterLab
# shows a PNG at its own size up to the notebook's width, the site up to its text column (704 px measured in
# Chromium at 1300 px). So a grid is at most GRID_WIDTH inches wide (its images shrink to fit), and its labels are
# LABEL_PT points: 14 px on the screen, at least 9 pt.
GRID_WIDTH = 6.8
LABEL_PT = 10


def row_label_texts(labels: Sequence[Label], cols: int) -> Optional[list[str]]:
    """The labels of a grid's rows when ``labels`` name rows (each row's first label set, the others empty:
    ``["w=1", "", "", "w=3", "", ""]``), else None."""
    if cols < 2:
        return None
    rows = [[str(label) for label in labels[i:i + cols]] for i in range(0, len(labels), cols)]
    if all(row[0] and not any(row[1:]) for row in rows):
        return [row[0] for row in rows]
    return None


def _text_inches(text: str, points: float) -> float:
    """About how wide ``text`` is, in inches, at ``points`` (its longest line; 0.55 em per character)."""
    return max(len(line) for line in text.split("\n")) * 0.55 * points / 72


def show_grid(images: Tensor, labels: Union[Sequence[Label], Tensor, None] = None, nrow: Optional[int] = None,
              title: Optional[str] = None, scale: float = 1.2) -> Figure:
    """A grid of images, one small axes each, with an optional label (int or str) above each image.

    ``labels`` may be a list or a 1-D tensor of class indices (e.g. ``y[:16]``). Labels that name rows (only
    the first image of each row labelled, e.g. ``w=3``) are written to the left of their row instead.

    ``nrow`` is the number of images per row; ``scale`` the size of one image in inches, shrunk where the
    grid would be wider than ``GRID_WIDTH`` inches, so that its labels stay ``LABEL_PT`` points as shown.
    """
    images = _check_images(images)
    if isinstance(labels, Tensor):
        labels = labels.tolist()
    if labels is not None and len(labels) != images.shape[0]:
        raise ValueError(f"labels must have one entry per image ({images.shape[0]}); got {len(labels)}")
    rows, cols = grid_shape(images.shape[0], nrow)
    row_names = row_label_texts(labels, cols) if labels is not None else None
    margin = max(_text_inches(name, LABEL_PT) for name in row_names) + 0.15 if row_names else 0.0
    scale = min(scale, (GRID_WIDTH - margin) / cols)
    lines = max(str(label).count("\n") + 1 for label in labels) if labels is not None and not row_names else 0
    if title:
        title = _wrap(title, cols * scale + margin)
    fig, axes = _subplots(rows, cols, scale, row_extra=0.2 * lines,
                          extra=0.3 * (title.count("\n") + 1) + 0.1 if title else 0.0)
    fig.set_figwidth(cols * scale + margin)
    for i, ax in enumerate(axes.flat):
        if i >= images.shape[0]:
            ax.axis("off")
            continue
        _imshow(ax, images[i])
        if row_names and i % cols == 0:
            ax.set_ylabel(row_names[i // cols], fontsize=LABEL_PT, rotation=0, ha="right", va="center", labelpad=4)
        elif labels is not None and not row_names:
            ax.set_title(str(labels[i]), fontsize=LABEL_PT, pad=2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _wrap(title: str, inches: float, points: float = 12) -> str:
    """``title`` broken into lines that fit ``inches`` at ``points`` (matplotlib's suptitle size)."""
    width = max(20, int(inches * 72 / (0.5 * points)))
    return "\n".join(textwrap.fill(line, width) for line in title.split("\n"))


def _noised(x0: Tensor, s: NoiseSchedule, ts: Sequence[int], noise: Tensor) -> list[Tensor]:
    """x_t for each t in ``ts``, all from the same x_0 and the same ε (so they form one progression)."""
    return [q_sample(x0, t, s, noise) for t in ts]


def _step_title(s: NoiseSchedule, i: int) -> str:
    r"""'t = 250' over '√ᾱ = 0.78' for position i = 249: how much of x_0's amplitude is left after step i + 1."""
    return f"{step_label(i + 1)}\n√ᾱ = {s.sqrt_alphas_cumprod[i].item():.2f}"


def show_forward_strip(x0: Tensor, schedule: NoiseSchedule, ts: Optional[Sequence[int]] = None,
                       noise: Optional[Tensor] = None, title: Optional[str] = None, scale: float = 1.2) -> Figure:
    r"""Rows: the images of ``x0``; columns: $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$
    at each position in ``ts``, titled with its step number (position i is "t = i + 1"; by default steps
    1, 50, 100, 250, 500, 750, 1000 for T = 1000).

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
                ax.set_title(step_label(t + 1), fontsize=10)      # position t is step t + 1
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


def _histogram(ax: plt.Axes, x: Tensor, bins: int, fontsize: float = 10) -> None:
    r"""Density histogram of the values of ``x`` on ``ax``, with the $\mathcal N(0, 1)$ pdf over it."""
    values = x.detach().float().cpu().flatten().numpy()
    lo, hi = min(-4.0, float(values.min())), max(4.0, float(values.max()))
    ax.hist(values, bins=bins, range=(lo, hi), density=True, color="tab:blue", alpha=0.6, label="pixels")
    grid = np.linspace(lo, hi, 400)
    ax.plot(grid, np.exp(-grid ** 2 / 2) / math.sqrt(2 * math.pi), color="black", lw=1.5,
            label=r"$\mathcal{N}(0, 1)$")
    ax.text(0.03, 0.97, f"mean {values.mean():+.2f}\nstd {values.std():.2f}", transform=ax.transAxes,
            va="top", fontsize=fontsize)
    ax.set_xlabel("pixel value", fontsize=fontsize + 1)
    ax.tick_params(labelsize=fontsize)


def plot_histogram(x: Tensor, title: Optional[str] = None, bins: int = 60) -> Figure:
    r"""Histogram (density) of all values of ``x`` (any shape) against the $\mathcal N(0, 1)$ density."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor; got {type(x).__name__}")
    if x.numel() == 0:
        raise ValueError(f"x must hold at least one value; got shape {tuple(x.shape)}")
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    _histogram(ax, x, bins)
    ax.set_ylabel("density", fontsize=11)
    ax.legend(loc="upper right", fontsize=10)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_histograms_over_t(x0: Tensor, schedule: NoiseSchedule, ts: Optional[Sequence[int]] = None,
                           noise: Optional[Tensor] = None, bins: int = 60) -> Figure:
    r"""One panel per position in ``ts``: the histogram of the pixels of $x_t$ drifting from the data's to
    $\mathcal N(0, 1)$, titled with the step number (position i is "t = i + 1").

    Two panels a row, each with its own y axis (the nearly clean images' histogram is spiky), sized so
    that the text stays readable at the width of a notebook page.
    """
    x0 = _check_images(x0, "x0")
    s = _check_schedule(schedule)
    ts = _check_ts(ts, s.num_steps)
    xs = _noised(x0, s, ts, _check_noise(noise, x0))
    rows, cols = grid_shape(len(ts), nrow=min(2, len(ts)))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.flat[len(ts):]:
        ax.axis("off")
    for ax, i, x_t in zip(axes.flat, ts, xs):
        _histogram(ax, x_t, bins)
        ax.set_title(f"{step_label(i + 1)}   (√ᾱ_t = {s.sqrt_alphas_cumprod[i].item():.2f})", fontsize=12)
    for ax in axes[:, 0]:
        ax.set_ylabel("density", fontsize=11)
    axes.flat[len(ts) - 1].legend(loc="upper right", fontsize=10)
    fig.tight_layout()
    return fig


def show_trajectory(trajectory: Tensor, steps: Sequence[int], row_labels: Optional[Sequence[Label]] = None,
                    title: Optional[str] = None, scale: float = 1.1) -> Figure:
    """Columns: the recorded images of a run of the chain, each titled once with ``step_label(steps[j])``;
    rows: the images of the batch (``row_labels`` at the left, once per row).

    ``trajectory`` has shape ``(len(steps), B, C, H, W)``: entry j is the image after ``steps[j]`` steps,
    as ``md.q_chain`` returns it.
    """
    if not isinstance(trajectory, Tensor) or trajectory.ndim != 5:
        shape = tuple(trajectory.shape) if isinstance(trajectory, Tensor) else type(trajectory).__name__
        raise ValueError(f"trajectory must have shape (len(steps), B, C, H, W); got {shape}")
    if len(steps) != trajectory.shape[0]:
        raise ValueError(f"steps must have one entry per recorded image ({trajectory.shape[0]}); got {len(steps)}")
    batch = trajectory.shape[1]
    if row_labels is not None and len(row_labels) != batch:
        raise ValueError(f"row_labels must have one entry per row ({batch}); got {len(row_labels)}")
    images = _check_images(trajectory.flatten(0, 1), "trajectory")           # (K·B, C, H, W), column-major
    fig, axes = _subplots(batch, len(steps), scale, extra=0.3 + (0.4 if title else 0.0))
    for col, step in enumerate(steps):
        axes[0, col].set_title(step_label(int(step)), fontsize=10)
        for row in range(batch):
            _imshow(axes[row, col], images[col * batch + row])
    for row, label in enumerate(row_labels or []):
        axes[row, 0].set_ylabel(str(label), fontsize=10, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# -- widgets ------------------------------------------------------------------------------------
def _step_text(s: NoiseSchedule, step: int) -> str:
    """'t = 250 · ᾱ_t = 0.6129 · √ᾱ_t = 0.783 · SNR = 1.58 · log-SNR = +0.46' after ``step`` steps
    (position step − 1); for step 0, x_0 itself. Separators, not runs of spaces: HTML collapses those."""
    if step == 0:
        return f"{step_label(0)} · x_0, the clean images · ᾱ_0 = 1"
    i = step - 1                                           # the position of step t in the tables
    abar = s.alphas_cumprod[i].item()
    return (f"{step_label(step)} · ᾱ_t = {abar:.4f} · √ᾱ_t = {math.sqrt(abar):.3f} · "
            f"SNR = {s.snr(i).item():.3g} · log-SNR = {s.log_snr[i].item():+.2f}")


def _x_after(x0: Tensor, s: NoiseSchedule, step: int, noise: Tensor) -> Tensor:
    """x_t after ``step`` forward steps, drawn in one jump: x_0 itself for 0, else ``q_sample`` at position step − 1."""
    return x0 if step == 0 else q_sample(x0, step - 1, s, noise)


def _slider(T: int, t_max: Optional[int], step: int, description: str, first: int = 0) -> widgets.IntSlider:
    """An IntSlider over step numbers t ∈ [first, t_max] (t_max defaults to T), updating while it is dragged."""
    t_max = T if t_max is None else t_max
    if not first <= t_max <= T:
        raise ValueError(f"t_max must be a step number in [{first}, {T}] (T={T}); got {t_max}")
    if step < 1:
        raise ValueError(f"step must be >= 1; got {step}")
    return widgets.IntSlider(value=first, min=first, max=t_max, step=step, description=description,
                             continuous_update=True, layout=widgets.Layout(width="520px"))


def _show_png(image: widgets.Image, png: bytes) -> None:
    """Put ``png`` into the widget at its own pixel width (JupyterLab would stretch it to the page)."""
    image.value = png
    image.layout.width = f"{Image.open(io.BytesIO(png)).size[0]}px"


def t_slider(x0: Tensor, schedule: NoiseSchedule, noise: Optional[Tensor] = None, t_max: Optional[int] = None,
             step: int = 1, description: str = "t", nrow: Optional[int] = None, zoom: int = 4) -> widgets.VBox:
    r"""A slider over the step number t = 0 … T showing $x_t$ for the images of ``x0``: x_0 itself at
    t = 0, else ``q_sample(x0, t - 1, schedule, noise)`` (step t sits at position t − 1).

    Returns ``VBox(children=(slider, image, caption))``: an ``IntSlider`` (``t_max`` is its last step
    number, default T), an ``Image`` (PNG) that is redrawn in place when the slider moves, and a ``Label``
    with t, ᾱ_t and the SNR. The same ε is used for every t. Needs a kernel; draw ``show_forward_strip``
    before it as the static fallback.
    """
    x0 = _check_images(x0, "x0")
    s = _check_schedule(schedule)
    noise = _check_noise(noise, x0)
    slider = _slider(s.num_steps, t_max, step, description)
    image = widgets.Image(format="png")
    caption = widgets.Label()

    def redraw(change: Optional[dict] = None) -> None:
        x_t = _x_after(x0, s, slider.value, noise)
        _show_png(image, png_bytes(x_t, nrow=nrow or x0.shape[0], zoom=zoom))
        caption.value = _step_text(s, slider.value)

    redraw()
    slider.observe(redraw, names="value")
    return widgets.VBox([slider, image, caption])


def schedule_compare_widget(schedules: Mapping[str, NoiseSchedule], x0: Tensor, noise: Optional[Tensor] = None,
                            zoom: int = 3) -> widgets.VBox:
    r"""One slider over the step number t = 1 … T; beside each other, for each named schedule, $x_t$ of the
    same ``x0`` and ε (``q_sample`` at position t − 1).

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
    slider = _slider(next(iter(steps.values())), None, 1, "t", first=1)     # step numbers 1 … T
    panels = [(s, widgets.Image(format="png"), widgets.Label()) for s in schedules.values()]

    def redraw(change: Optional[dict] = None) -> None:
        i = slider.value - 1                               # step t sits at position t − 1
        for s, image, caption in panels:
            _show_png(image, png_bytes(q_sample(x0, i, s, noise), nrow=x0.shape[0], zoom=zoom))
            caption.value = f"√ᾱ_t = {s.sqrt_alphas_cumprod[i].item():.3f} · log-SNR = {s.log_snr[i].item():+.2f}"

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
        text = captions.get(slider.value, "")
        # HTML collapses runs of spaces
        caption.value = f"{description} = {slider.value}" + (f" · {text}" if text else "")

    redraw()
    slider.observe(redraw, names="value")
    return widgets.VBox([slider, image, caption])
