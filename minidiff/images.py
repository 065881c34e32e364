r"""Images as tensors and as files: one convention for the whole package.

A batch is ``(B, C, H, W)`` floats in model range $[-1, 1]$ (``data.to_model_range`` puts pixels
there), ``C = 1`` gray or ``C = 3`` RGB. ``check_batch`` is the one validator of that convention;
``image_grid`` tiles a batch; ``png_bytes`` / ``save_grid`` write it as a PNG (or a JPEG, by the file's
extension), clamped, never rescaled, so the same pixel value always looks the same. ``save_grid`` refuses
what would silently come out wrong (NaN drawn black, pixels in [0, 255] drawn white) and replaces the
file atomically. No plotting library is needed here (``course/viz.py`` draws figures on top of these).
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from einops import rearrange, repeat
from PIL import Image
from torch import Tensor

from .checkpoint import atomic_write_bytes
from .data import to_pixel_range

FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}   # file extension -> PIL format
OUT_OF_RANGE = 2.0        # |x| beyond this: not a sample that overshot [-1, 1] a little, but another scale


def check_batch(images: Tensor, name: str = "images", channels: Optional[Sequence[int]] = (1, 3)) -> None:
    """Raise, naming ``name``, unless ``images`` is a non-empty float batch (B, C, H, W) with C in
    ``channels`` (None: any number of channels)."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, C, H, W); got {type(images).__name__}")
    if not images.is_floating_point():
        hint = " (integer pixels? scale them with minidiff.data.to_model_range)" if not images.is_complex() else ""
        raise TypeError(f"{name} must be a float tensor in [-1, 1]; got {images.dtype}{hint}")
    if images.ndim != 4:
        hint = f"; for one image use {name}[None]" if images.ndim == 3 else ""
        raise ValueError(f"{name} must be 4-D (B, C, H, W); got shape {tuple(images.shape)}{hint}")
    if channels is not None and images.shape[1] not in channels:
        raise ValueError(f"{name} must have {' or '.join(map(str, channels))} channel(s), shape (B, C, H, W); "
                         f"got C={images.shape[1]} in shape {tuple(images.shape)}")
    if images.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one image; got shape {tuple(images.shape)}")


def grid_shape(n: int, nrow: Optional[int]) -> tuple[int, int]:
    """(rows, columns) of a grid of ``n`` cells with ``nrow`` cells per row (square-ish when None)."""
    ncol = math.ceil(math.sqrt(n)) if nrow is None else nrow
    if isinstance(ncol, bool) or not isinstance(ncol, int) or ncol < 1:
        raise ValueError(f"nrow must be a positive int (images per row); got {nrow!r}")
    ncol = min(ncol, n)
    return math.ceil(n / ncol), ncol


def image_grid(images: Tensor, nrow: Optional[int] = None, pad: int = 0, fill: float = 1.0) -> Tensor:
    r"""Tile a batch (B, C, H, W) into one image (rows·(H+pad) − pad, nrow·(W+pad) − pad, C), row by row.

    ``nrow`` is the number of images per row (as in torchvision's ``make_grid``); by default the
    grid is as square as possible. Empty cells and the ``pad`` pixels between tiles hold ``fill``.
    Values are only moved, never changed (the result is float32 on the CPU, in the range of ``images``).
    """
    check_batch(images)
    images = images.detach().float().cpu()
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ValueError(f"pad must be an int >= 0 (pixels between tiles); got {pad!r}")
    rows, ncol = grid_shape(images.shape[0], nrow)
    blanks = images.new_full((rows * ncol - images.shape[0], *images.shape[1:]), fill)
    tiles = torch.cat([images, blanks])
    # pad only right and bottom of every tile, then drop the last gap of the whole grid
    tiles = torch.nn.functional.pad(tiles, (0, pad, 0, pad), value=fill)
    grid = rearrange(tiles, "(r c) ch h w -> (r h) (c w) ch", r=rows)
    return grid[: grid.shape[0] - pad, : grid.shape[1] - pad]


def png_bytes(images: Tensor, nrow: Optional[int] = None, zoom: int = 4, format: str = "png") -> bytes:
    """A PNG (or ``format="jpeg"``) of the grid of ``images`` (in [-1, 1]), each pixel a zoom × zoom block."""
    check_batch(images)
    grid = image_grid(to_pixel_range(images.detach().float().cpu()), nrow=nrow, pad=1, fill=1.0)
    # nearest-neighbour upscaling, so small images stay sharp in the browser
    grid = repeat(grid, "h w c -> (h zh) (w zw) c", zh=zoom, zw=zoom)
    pixels = (grid * 255).round().to(torch.uint8).numpy()
    buffer = io.BytesIO()
    options = {"quality": 95} if format == "jpeg" else {}
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buffer, format=format, **options)
    return buffer.getvalue()


def check_drawable(images: Tensor, name: str = "images") -> None:
    """Raise ValueError unless every value of ``images`` is finite and within ±OUT_OF_RANGE: NaN would be
    drawn black, and a batch in [0, 255] (or far beyond [-1, 1]) would be drawn all white or black."""
    check_batch(images, name)
    finite = torch.isfinite(images)
    if not finite.all():
        bad = int((~finite).sum())
        raise ValueError(f"{name} hold {bad} NaN or inf value(s) of {images.numel()} (in image(s) "
                         f"{sorted(set((~finite).flatten(1).any(1).nonzero().flatten().tolist()))[:10]}); they "
                         f"would be drawn as black or white pixels, so nothing was written")
    low, high = float(images.min()), float(images.max())
    if max(-low, high) > OUT_OF_RANGE:
        hint = (" (pixels in [0, 255]? scale them with minidiff.data.to_model_range)" if low >= 0 and high > 2
                else " (clamp them with images.clamp(-1, 1) if that is what you mean)")
        raise ValueError(f"{name} must be in the model range [-1, 1]; got values in [{low:.4g}, {high:.4g}], which "
                         f"would be drawn clamped to black or white{hint}; nothing was written")


def image_format(path: Union[str, os.PathLike], name: str = "path") -> str:
    """The PIL format that the extension of ``path`` names: png, or jpeg for .jpg / .jpeg."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{name} must end in {', '.join(FORMATS)} (the image format is taken from the "
                         f"extension); got {str(path)!r}")
    return FORMATS[suffix]


def save_grid(images: Tensor, path: Union[str, os.PathLike], nrow: Optional[int] = None, zoom: int = 2) -> Path:
    """Save a batch in [-1, 1] as one PNG or JPEG grid (by the extension; parent folders created).

    The file is replaced atomically (a full disk leaves the old grid whole); NaN or values far outside
    [-1, 1] are a ValueError before anything is written."""
    path = Path(path)
    format = image_format(path)
    check_drawable(images)
    data = png_bytes(images, nrow=nrow, zoom=zoom, format=format)
    return atomic_write_bytes(path, data)
