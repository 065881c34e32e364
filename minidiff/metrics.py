r"""Metrics: how good are generated digits, measured in the features of a small digit classifier.

Inception weights cannot be downloaded here, so FID proper is out of reach. Instead a small CNN,
``DigitClassifier`` (``minidiff.nn.classifier``), is trained on the same MNIST digits as the diffusion
models (``python -m minidiff train --recipe classifier``) and shipped (``pretrained.load_classifier()``).
Its penultimate activations, ``features(x) ∈ ℝ^D`` (D = 128), stand in for Inception's pool features:

- **Fréchet distance in DigitClassifier features** (``frechet_distance``): fit a Gaussian to each
  feature set and measure  FD = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2}).  Same formula as FID,
  different network, so its numbers are not comparable with published FIDs.
- **Kernel distance** (``kernel_distance``, KID): the unbiased MMD² between the feature sets with
  the cubic polynomial kernel k(x, y) = (xᵀy / D + 1)³, averaged over random subsets.
- **Class accuracy** (``class_accuracy``): the fraction of class-conditional samples that the
  classifier labels as the class they were asked for.

The protocol (fixed, so that numbers from different notebooks compare):

- generate 1,000 samples, 100 per class, and compare them with the 1,000 held-out digits
  (``reference_images()``; never used to train the classifier or the diffusion models);
- the **floor** (``reference_floor()``) is the same metric between 1,000 real training digits
  (the first 100 of each class in the train split) and those held-out digits. With n = 1,000
  points in 128 dimensions a Fréchet distance is dominated by sampling noise: even two sets of
  real digits are far from 0 apart. So only the ratio ``fd / floor`` means anything: about 1 is
  as good as real data, 2 is twice as far. KID is unbiased, so its floor is about 0 (a little
  negative is normal): read it against ``kid_std``, not as a ratio.

``evaluate(samples, labels)`` runs the whole protocol and returns every number in one dict.
"""
from __future__ import annotations

import math
import time
import warnings
from functools import lru_cache
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import pretrained
from .data import COLORS, POSITIONS, SCENE_RADIUS_RANGE, SIZES, parse_caption
from .images import check_batch
from .nn.classifier import DigitClassifier
from .progress import progress_bar
from .samplers import GuidanceArg, SamplerName, sample
from .schedules import NoiseSchedule

Device = Union[str, torch.device]
NUM_CLASSES = 10
PER_CLASS = 100                    # the protocol: 100 samples of each digit, 1,000 in all


# -- input checks ------------------------------------------------------------------------------
def check_images(images: Tensor, name: str = "images") -> None:
    """Raise, naming ``name``, unless ``images`` is a finite float tensor (B, 1, 28, 28) in model range."""
    if isinstance(images, Tensor) and images.is_floating_point() and (
            images.ndim != 4 or tuple(images.shape[1:]) != (1, 28, 28) or len(images) == 0):
        raise ValueError(f"{name} must have shape (B, 1, 28, 28) with B >= 1, grayscale MNIST-sized digits; "
                         f"got {tuple(images.shape)}")
    check_batch(images, name, channels=(1,))
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} holds NaN or infinite values (did the sampler diverge?)")
    if images.abs().max() > 10:
        # samplers overshoot [-1, 1] a little; values this large are 0-255 pixels
        raise ValueError(f"{name} must be in [-1, 1]; got values up to {images.abs().max().item():.4g} "
                         f"(0-255 pixels? scale them with minidiff.data.to_model_range)")


def check_labels(labels: Tensor, images: Tensor, name: str = "labels") -> None:
    """Raise, naming ``name``, unless ``labels`` is an integer tensor (B,) of digits 0-9 beside ``images``."""
    if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.dtype == torch.bool:
        what = labels.dtype if isinstance(labels, Tensor) else type(labels).__name__
        raise TypeError(f"{name} must be an integer tensor of class indices; got {what}")
    if labels.shape != images.shape[:1]:
        raise ValueError(f"{name} must have shape ({len(images)},), one per image; got {tuple(labels.shape)}")
    if labels.device != images.device:
        raise ValueError(f"{name} must be on the images' device {images.device}; got {labels.device}")
    if ((labels < 0) | (labels >= NUM_CLASSES)).any():
        raise ValueError(f"{name} must be digits in [0, {NUM_CLASSES}); got values in "
                         f"[{labels.min().item()}, {labels.max().item()}]")


def _classifier_for(images: Tensor, classifier: Optional[DigitClassifier]) -> DigitClassifier:
    """``classifier``, or the shipped one on the images' device; never moves anything across devices."""
    if classifier is None:
        return pretrained.load_classifier(device=images.device)
    weights_device = next(classifier.parameters()).device
    if weights_device != images.device:
        raise ValueError(f"classifier is on {weights_device} but the images are on {images.device}; "
                         f"move one of them (classifier.to(images.device))")
    return classifier


# -- features and the metrics on them ----------------------------------------------------------
@torch.no_grad()
def _apply(classifier: DigitClassifier, images: Tensor, method: str, batch_size: int) -> Tensor:
    """``classifier.<method>`` over ``images`` in batches, in eval mode (BatchNorm's running statistics,
    no dropout); the classifier's own mode is restored afterwards."""
    dtype = next(classifier.parameters()).dtype
    was_training = classifier.training
    classifier.eval()
    try:
        return torch.cat([getattr(classifier, method)(x.to(dtype)) for x in images.split(batch_size)])
    finally:
        classifier.train(was_training)


def features(images: Tensor, classifier: Optional[DigitClassifier] = None, batch_size: int = 500) -> Tensor:
    """The classifier's penultimate activations (B, D), on the images' device, in batches of ``batch_size``.

    Default classifier: the shipped one (``pretrained.load_classifier``) on the images' device.
    """
    check_images(images)
    return _apply(_classifier_for(images, classifier), images, "features", batch_size)


def class_accuracy(samples: Tensor, labels: Tensor, classifier: Optional[DigitClassifier] = None) -> float:
    r"""The fraction of samples classified as the digit they were drawn for:
    $\frac1B \sum_b [\arg\max_k f(x_b)_k = y_b]$."""
    check_images(samples, "samples")
    check_labels(labels, samples)
    logits = _apply(_classifier_for(samples, classifier), samples, "forward", 500)
    return (logits.argmax(dim=1) == labels).double().mean().item()


def _as_float64(x: Tensor, name: str, ndim: int) -> Tensor:
    """``x`` (a tensor or an array) as a float64 CPU tensor with ``ndim`` axes; the statistics need the precision."""
    x = torch.as_tensor(x).detach().to("cpu", torch.float64)
    if x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions; got shape {tuple(x.shape)}")
    return x


def frechet_distance_gaussians(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    r"""The Fréchet (2-Wasserstein²) distance between $\mathcal N(\mu_1, \Sigma_1)$ and $\mathcal N(\mu_2, \Sigma_2)$:

    $$d^2 = \|\mu_1 - \mu_2\|^2 + \mathrm{Tr}\big(\Sigma_1 + \Sigma_2 - 2 (\Sigma_1 \Sigma_2)^{1/2}\big).$$

    $\Sigma_1 \Sigma_2$ is not symmetric, but it is similar to $M = \Sigma_1^{1/2} \Sigma_2 \Sigma_1^{1/2}$,
    which is symmetric positive semi-definite, so $\mathrm{Tr}(\Sigma_1\Sigma_2)^{1/2} = \sum_i \sqrt{\lambda_i(M)}$
    with real eigenvalues from ``eigvalsh``: no complex round-off to discard, unlike ``scipy.linalg.sqrtm``.
    """
    mu1, mu2 = _as_float64(mu1, "mu1", 1), _as_float64(mu2, "mu2", 1)
    sigma1, sigma2 = _as_float64(sigma1, "sigma1", 2), _as_float64(sigma2, "sigma2", 2)
    D = mu1.shape[0]
    for name, value, shape in (("mu2", mu2, (D,)), ("sigma1", sigma1, (D, D)), ("sigma2", sigma2, (D, D))):
        if tuple(value.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} to match mu1 of shape ({D},); got {tuple(value.shape)}")
    # Σ₁^{1/2} from the eigendecomposition Σ₁ = V diag(λ) Vᵀ; round-off can make tiny λ negative
    lam, V = torch.linalg.eigh(sigma1)
    sqrt_sigma1 = V @ torch.diag(lam.clamp(min=0).sqrt()) @ V.T
    M = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    tr_sqrt = torch.linalg.eigvalsh((M + M.T) / 2).clamp(min=0).sqrt().sum()
    d2 = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * tr_sqrt
    return max(d2.item(), 0.0)       # ≥ 0 in exact arithmetic; round-off can dip below for equal inputs


def gaussian_fit(f: Tensor) -> tuple[Tensor, Tensor]:
    r"""Mean and unbiased covariance of features (N, D), in float64:
    $\mu = \bar f$, $\Sigma = \frac{1}{N-1}\sum_n (f_n-\mu)(f_n-\mu)^\top$."""
    f = _as_float64(f, "features", 2)
    if len(f) < 2:
        raise ValueError(f"features need at least 2 rows to estimate a covariance; got {len(f)}")
    mu = f.mean(dim=0)
    centred = f - mu
    return mu, centred.T @ centred / (len(f) - 1)


def frechet_distance_from_features(f1: Tensor, f2: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N₁, D) and (N₂, D)."""
    _check_feature_pair(f1, f2)
    return frechet_distance_gaussians(*gaussian_fit(f1), *gaussian_fit(f2))


fid_from_features = frechet_distance_from_features     # the name FID code uses; no Inception here


def _check_feature_pair(f1: Tensor, f2: Tensor) -> None:
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"f1 and f2 must be feature matrices (N, D) with the same D; "
                         f"got {tuple(f1.shape)} and {tuple(f2.shape)}")


def polynomial_kernel(a: Tensor, b: Tensor) -> Tensor:
    r"""KID's kernel on rows of (N, D) and (M, D): $k(x, y) = (x^\top y / D + 1)^3$, an (N, M) matrix."""
    return (a @ b.T / a.shape[1] + 1) ** 3


def mmd2_unbiased(f1: Tensor, f2: Tensor) -> float:
    r"""The unbiased estimate of the squared maximum mean discrepancy between samples X (m) and Y (n):

    $$\widehat{\mathrm{MMD}}^2 = \frac{1}{m(m-1)}\sum_{i \ne j} k(x_i, x_j) + \frac{1}{n(n-1)}\sum_{i \ne j} k(y_i, y_j)
      - \frac{2}{mn}\sum_{i, j} k(x_i, y_j).$$

    Leaving out the diagonal $i = j$ makes it unbiased: its mean is 0 for equal distributions, so a
    single estimate can be slightly negative.
    """
    x, y = _as_float64(f1, "f1", 2), _as_float64(f2, "f2", 2)
    m, n = len(x), len(y)
    kxx, kyy = polynomial_kernel(x, x), polynomial_kernel(y, y)
    xx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return (xx + yy - 2 * polynomial_kernel(x, y).mean()).item()


def kid_from_features(f1: Tensor, f2: Tensor, subsets: int = 10, subset_size: Optional[int] = None,
                      seed: int = 0) -> tuple[float, float]:
    """Kernel distance: mean and std of ``mmd2_unbiased`` over ``subsets`` random subsets of each set.

    ``subset_size`` defaults to half the smaller set, at most 1,000 (500 for the 1,000-digit protocol),
    so that the subsets differ and the std says how much the number would move on other samples.
    Subsets are drawn without replacement, reproducibly from ``seed``.
    """
    _check_feature_pair(f1, f2)
    largest = min(len(f1), len(f2))
    size = min(largest // 2, 1000) if subset_size is None else subset_size
    if not 2 <= size <= largest:
        raise ValueError(f"subset_size must be in [2, {largest}] (the smaller set's size); got {size}")
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1; got {subsets}")
    f1, f2 = _as_float64(f1, "f1", 2), _as_float64(f2, "f2", 2)
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        x = f1[torch.randperm(len(f1), generator=generator)[:size]]
        y = f2[torch.randperm(len(f2), generator=generator)[:size]]
        values.append(mmd2_unbiased(x, y))
    values = torch.tensor(values, dtype=torch.float64)
    return values.mean().item(), (values.std().item() if subsets > 1 else 0.0)


# -- the protocol ------------------------------------------------------------------------------
def reference_images() -> tuple[Tensor, Tensor]:
    """The 1,000 held-out digits (100 per class) and their labels, on CPU: what samples are compared with."""
    from .data import mnist
    heldout = mnist("heldout")
    return heldout.images, heldout.labels


def floor_images() -> tuple[Tensor, Tensor]:
    """1,000 real training digits, the first 100 of each class in the train split: the floor's stand-in samples."""
    from .data import mnist
    train = mnist("train")
    keep = torch.cat([torch.nonzero(train.labels == k).flatten()[:PER_CLASS] for k in range(NUM_CLASSES)])
    keep = keep.sort().values                     # back in the split's own row order
    return train.images[keep], train.labels[keep]


def _features_pair(samples: Tensor, reference: Optional[Tensor],
                   classifier: Optional[DigitClassifier]) -> tuple[Tensor, Tensor]:
    """Features of ``samples`` and of ``reference`` (default: the held-out digits, on the samples' device)."""
    check_images(samples, "samples")
    if reference is None:
        reference = reference_images()[0].to(samples.device)
    check_images(reference, "reference")
    if reference.device != samples.device:
        raise ValueError(f"reference must be on the samples' device {samples.device}; got {reference.device}")
    return features(samples, classifier), features(reference, classifier)


def frechet_distance(samples: Tensor, reference: Optional[Tensor] = None,
                     classifier: Optional[DigitClassifier] = None) -> float:
    r"""Fréchet distance in DigitClassifier features between ``samples`` and ``reference`` (default:
    the 1,000 held-out digits): $\|\mu_1-\mu_2\|^2 + \mathrm{Tr}(\Sigma_1+\Sigma_2-2(\Sigma_1\Sigma_2)^{1/2})$.

    Compare it with ``reference_floor()["fd"]``, not with 0 or with published FIDs.
    """
    return frechet_distance_from_features(*_features_pair(samples, reference, classifier))


def kernel_distance(samples: Tensor, reference: Optional[Tensor] = None, classifier: Optional[DigitClassifier] = None,
                    subsets: int = 10, subset_size: Optional[int] = None, seed: int = 0) -> tuple[float, float]:
    """Kernel distance (KID, the unbiased MMD² of ``mmd2_unbiased``) in DigitClassifier features between
    ``samples`` and ``reference`` (default: the held-out digits): (mean, std) over random subsets."""
    f1, f2 = _features_pair(samples, reference, classifier)
    return kid_from_features(f1, f2, subsets=subsets, subset_size=subset_size, seed=seed)


@lru_cache(maxsize=1)
def _shipped_floor() -> tuple[float, tuple[float, float]]:
    floor = floor_images()[0]
    f1, f2 = features(floor), features(reference_images()[0])
    return frechet_distance_from_features(f1, f2), kid_from_features(f1, f2)


def reference_floor(classifier: Optional[DigitClassifier] = None) -> dict:
    """The metrics between 1,000 real training digits and the 1,000 held-out ones: {"fd": float, "kid": (mean, std)}.

    This is the score of a perfect generator under the protocol; divide by it. Computed once per
    process for the shipped classifier (on CPU), every call for another ``classifier``.
    """
    if classifier is None:
        fd, kid = _shipped_floor()
    else:
        device = next(classifier.parameters()).device
        f1 = features(floor_images()[0].to(device), classifier)
        f2 = features(reference_images()[0].to(device), classifier)
        fd, kid = frechet_distance_from_features(f1, f2), kid_from_features(f1, f2)
    return {"fd": fd, "kid": kid}


def evaluate(samples: Tensor, labels: Optional[Tensor] = None,
             classifier: Optional[DigitClassifier] = None) -> dict:
    """The whole protocol on 1,000 samples (100 per class) against the held-out digits, in one dict:

    ``fd``, ``fd_floor``, ``fd_ratio`` (fd / fd_floor: ~1 is as good as real digits), ``kid`` and
    ``kid_std``, ``kid_floor``, and ``accuracy`` (``class_accuracy``) when ``labels`` are given.
    """
    check_images(samples, "samples")
    if labels is not None:
        check_labels(labels, samples)
    if len(samples) != NUM_CLASSES * PER_CLASS:
        warnings.warn(f"the floor is measured with {NUM_CLASSES * PER_CLASS} images and the Fréchet distance "
                      f"depends on n, so fd_ratio is only comparable at n = {NUM_CLASSES * PER_CLASS}; "
                      f"got {len(samples)} samples", stacklevel=2)
    f1, f2 = _features_pair(samples, None, classifier)
    floor = reference_floor(classifier)
    fd, (kid, kid_std) = frechet_distance_from_features(f1, f2), kid_from_features(f1, f2)
    result = {"fd": fd, "fd_floor": floor["fd"], "fd_ratio": fd / floor["fd"],
              "kid": kid, "kid_std": kid_std, "kid_floor": floor["kid"][0]}
    if labels is not None:
        result["accuracy"] = class_accuracy(samples, labels, classifier)
    return result


def evaluate_model(model: nn.Module, s: NoiseSchedule, sampler: SamplerName = "ddim", steps: int = 50,
                   guidance_scale: GuidanceArg = None, draws: int = 1, seed: int = 0,
                   dtype: Optional[torch.dtype] = None, progress: Optional[bool] = None) -> dict:
    """The protocol on a class-conditional diffusion model: 1,000 samples (100 per class, unguided unless
    ``guidance_scale``), ``evaluate``d; with ``draws`` > 1, the mean over that many draws (seeds
    ``seed``, ``seed`` + 1, …), since one draw's FD moves by about ±7%. Adds ``sampler``, ``steps``,
    ``draws`` and ``sample_seconds``. ``dtype=torch.bfloat16``: the network under autocast (faster on a GPU).
    ``progress``: a bar over the draws and the sampler's own over its steps (None: in a notebook or on a
    terminal; ``minidiff.progress``)."""
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be an int >= 1; got {draws!r}")
    device = s.device
    labels = torch.arange(NUM_CLASSES * PER_CLASS, device=device) % NUM_CLASSES
    start, results = time.perf_counter(), []
    for draw in progress_bar(range(draws), progress, "draws"):
        with torch.no_grad():
            x = sample(sampler, model, s, (len(labels), 1, 28, 28), steps, labels, guidance_scale,
                       generator=torch.Generator(device).manual_seed(seed + draw), dtype=dtype, progress=progress)
        results.append(evaluate(x.clamp(-1, 1).cpu(), labels.cpu()))
    mean = {key: sum(r[key] for r in results) / draws for key in results[0]}
    mean["fd_ratio"] = mean["fd"] / mean["fd_floor"]
    return mean | {"sampler": sampler, "steps": steps, "draws": draws,
                   "sample_seconds": round(time.perf_counter() - start, 2)}


def within_class_diversity(samples: Tensor, labels: Tensor, classifier: Optional[DigitClassifier] = None) -> float:
    r"""How different the samples of one class are from each other, in the classifier's features:
    $\frac1K\sum_k \mathrm{mean}_{i \ne j,\ y_i = y_j = k} \|f(x_i) - f(x_j)\|$ over the classes present
    (with at least two samples). Guidance trades it for accuracy: compare it with the same number for
    real digits (``within_class_diversity(*reference_images())``), not across classifiers."""
    check_images(samples, "samples")
    check_labels(labels, samples)
    f = features(samples, classifier).double()
    per_class = []
    for k in labels.unique().tolist():
        fk = f[labels == k]
        if len(fk) < 2:
            continue
        distances = torch.cdist(fk, fk)
        per_class.append(distances.sum() / (len(fk) * (len(fk) - 1)))        # the diagonal is 0
    if not per_class:
        raise ValueError("labels must give at least one class two samples, to measure a distance between them")
    return torch.stack(per_class).mean().item()


# -- Shapes: what a sample shows, measured ----------------------------------------------------------
# Shapes (minidiff.data) is procedural, so its colour can be read off the pixels exactly; its shape is
# judged by a small classifier trained on it (``python -m minidiff train --recipe shapes_classifier``).
SHAPES_CLASSIFIER = "shapes_classifier"
SHAPES_ATTRIBUTES = ("shape", "color")


def check_shapes(images: Tensor, name: str = "images") -> None:
    """Raise, naming ``name``, unless ``images`` is a finite float batch (B, 3, 32, 32) in model range."""
    if isinstance(images, Tensor) and images.is_floating_point() and tuple(images.shape[1:]) != (3, 32, 32):
        raise ValueError(f"{name} must have shape (B, 3, 32, 32), Shapes images of 32×32; got {tuple(images.shape)}")
    check_batch(images, name, channels=(3,))
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} holds NaN or infinite values (did the sampler diverge?)")


def shape_colors(images: Tensor) -> Tensor:
    r"""The colour of each Shapes image, read off its pixels: the mean RGB $\bar c$ of the foreground (the
    pixels whose brightest channel is above mid-grey; every colour of ``data.COLORS`` is brighter than
    that, the background is black), then the index of the nearest colour, $\arg\min_k \|\bar c - c_k\|$.
    Exact on real Shapes; −1 for an image with no foreground at all."""
    from .data import COLORS
    pixels = (images.clamp(-1, 1) + 1) / 2                                    # (B, 3, H, W) in [0, 1]
    foreground = (pixels.amax(dim=1, keepdim=True) > 0.5).to(pixels.dtype)
    count = foreground.sum(dim=(1, 2, 3))
    mean = (pixels * foreground).sum(dim=(2, 3)) / count.clamp(min=1).unsqueeze(1)        # (B, 3)
    palette = torch.tensor(list(COLORS.values()), dtype=pixels.dtype, device=images.device)
    nearest = torch.cdist(mean, palette).argmin(dim=1)
    return torch.where(count > 0, nearest, torch.full_like(nearest, -1))


def shapes_reference(n: int = 1024, seed: int = 1) -> tuple[Tensor, Tensor]:
    """``n`` held-out Shapes images (seed 1: never trained on) and their (shape, colour) labels (n, 2)."""
    from .data import Shapes
    return Shapes(n, 32, seed=seed, attributes=SHAPES_ATTRIBUTES).batch(n)


def shape_predictions(samples: Tensor, classifier: Optional[DigitClassifier] = None) -> Tensor:
    """The shape index (``data.SHAPES``) the shapes classifier (default: the shipped one) reads in each
    Shapes image, (B,) on the images' device."""
    check_shapes(samples, "samples")
    classifier = classifier or pretrained.load_classifier(SHAPES_CLASSIFIER, samples.device)
    return _apply(classifier, samples, "forward", 500).argmax(dim=1)


def attribute_accuracy(samples: Tensor, labels: Tensor, classifier: Optional[DigitClassifier] = None) -> dict:
    r"""How often a sample shows what it was drawn for: ``{"shape", "color", "both"}``, each a fraction.
    ``labels`` are (B, 2) rows (shape, colour); the shape is judged by the shapes classifier (default: the
    shipped one), the colour by ``shape_colors``."""
    check_shapes(samples, "samples")
    if not isinstance(labels, Tensor) or labels.shape != (len(samples), 2) or labels.is_floating_point():
        raise ValueError(f"labels must be an integer tensor ({len(samples)}, 2) of (shape, colour) rows; got "
                         f"{getattr(labels, 'dtype', type(labels).__name__)} {tuple(getattr(labels, 'shape', ()))}")
    shape_ok = shape_predictions(samples, classifier) == labels[:, 0].to(samples.device)
    color_ok = shape_colors(samples) == labels[:, 1].to(samples.device)
    return {"shape": shape_ok.double().mean().item(), "color": color_ok.double().mean().item(),
            "both": (shape_ok & color_ok).double().mean().item()}


def evaluate_shapes(samples: Tensor, labels: Tensor, classifier: Optional[DigitClassifier] = None) -> dict:
    """``attribute_accuracy`` plus the Fréchet distance in the shapes classifier's features to as many
    held-out images (seed 1), and the floor: the same distance from real images (seed 2) to them."""
    classifier = classifier or pretrained.load_classifier(SHAPES_CLASSIFIER, samples.device)
    result = attribute_accuracy(samples, labels, classifier)
    reference = shapes_reference(len(samples))[0].to(samples.device)
    real = shapes_reference(len(samples), seed=2)[0].to(samples.device)
    f_ref = _apply(classifier, reference, "features", 500)
    fd = frechet_distance_from_features(_apply(classifier, samples, "features", 500), f_ref)
    floor = frechet_distance_from_features(_apply(classifier, real, "features", 500), f_ref)
    return result | {"fd": fd, "fd_floor": floor, "fd_ratio": fd / floor}


# -- Scenes: what a captioned scene shows, measured ---------------------------------------------------
# A text-to-image model is asked for "a small red circle at the top left" or "a small red circle and a
# large blue square" (data.Scenes, 64×64). Colour, position and size are read off the pixels; the shape
# by the shapes classifier at 32×32. Each docstring gives the measurement's own floor: its accuracy on
# real held-out scenes (seed 1), which is what a perfect generator would score.
CLASSIFIER_SIZE = 32                 # the shipped shapes classifier reads 3×32×32 only
# Area of each shape of unit radius (data._DISTANCES): circle π, square (√2)², equilateral triangle
# 3√3/4, cross two bars 1.86 × 0.66 (arm 0.93, half width 0.33) less their 0.66² overlap.
UNIT_AREAS = (math.pi, 2.0, 3 * math.sqrt(3) / 4, 2 * 1.86 * 0.66 - 0.66 ** 2)
# An object "has its colour" if at least this fraction of the image is its colour: half the smallest
# shape a scene holds (a triangle of radius 0.12, 0.0187 of the image: 76.6 px at 64×64), so 38.3 px.
MIN_OBJECT_AREA = 0.5 * UNIT_AREAS[2] * SCENE_RADIUS_RANGE[0] ** 2


def check_scenes(images: Tensor, name: str = "images") -> None:
    """Raise, naming ``name``, unless ``images`` is a finite float batch (B, 3, H, H) of square RGB images, H >= 8."""
    check_batch(images, name, channels=(3,))
    if images.shape[2] != images.shape[3] or images.shape[2] < 8:
        raise ValueError(f"{name} must be square RGB images (B, 3, H, H) with H >= 8; got {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} holds NaN or infinite values (did the sampler diverge?)")


def to_classifier_size(images: Tensor) -> Tensor:
    """Scenes at any size (64×64 in practice) area-downsampled to the shapes classifier's 3×32×32: each
    output pixel the mean of the input pixels it covers (2×2 at 64×64), so edges stay anti-aliased.

    The classifier was trained on Shapes at 32×32 with radii 0.14–0.30; scene shapes go down to 0.12.
    Through this path it still reads 1000/1000 real single-shape Scenes right (64×64, seed 1; 149 of them
    with radius < 0.14)."""
    check_scenes(images)
    if images.shape[-1] == CLASSIFIER_SIZE:
        return images
    return F.interpolate(images, size=(CLASSIFIER_SIZE, CLASSIFIER_SIZE), mode="area")


def _coverage(images: Tensor) -> tuple[Tensor, Tensor]:
    r"""(foreground (B, H, W) bool, weight (B, H, W)). Foreground as in ``shape_colors``: brightest channel
    $b > 1/2$ in [0, 1]. The weight is $b$ on the foreground and its one-pixel rim (a 3×3 dilation), 0
    elsewhere: on a real scene $b$ is the pixel's coverage times the colour's brightest channel, and the
    rim holds the anti-aliased edge, so weighted sums are areas and centroids to a fraction of a pixel."""
    b = ((images.clamp(-1, 1) + 1) / 2).amax(dim=1)
    foreground = b > 0.5
    near = F.max_pool2d(foreground.to(b.dtype).unsqueeze(1), 3, stride=1, padding=1).squeeze(1)
    return foreground, b * near


def shape_positions(images: Tensor) -> Tensor:
    r"""Which ninth of each image holds its drawing: the index into ``POSITIONS`` (reading order, the names of
    ``ShapeSpec.where``) of the coverage-weighted centroid $\bar c = \sum_p w_p\, c_p / \sum_p w_p$ of the
    foreground and its rim (``_coverage``), (B,) int64; −1 where there is no foreground.

    Every shape's centroid is its centre: circle, square and cross are point-symmetric, and an equilateral
    triangle's centroid is its circumcentre. Measured on 1,000 real single-shape Scenes (64×64, seed 1):
    the centroid is within 0.065 px of the centre and the position right for 998/1000; the two misses have
    their centres 0.005 and 0.05 px from a ninth's edge (183 of the 1,000 lie within a pixel of one). The
    bare foreground mask's centroid, without the rim weights, is off by up to 0.44 px.
    """
    check_scenes(images)
    foreground, w = _coverage(images)
    size = images.shape[-1]
    centres = (torch.arange(size, device=images.device, dtype=w.dtype) + 0.5) / size
    total = w.sum(dim=(1, 2)).clamp(min=1e-12)
    cx, cy = (w.sum(dim=1) * centres).sum(dim=1) / total, (w.sum(dim=2) * centres).sum(dim=1) / total
    row, col = (cy * 3).floor().clamp(0, 2), (cx * 3).floor().clamp(0, 2)
    index = (3 * row + col).long()
    return torch.where(foreground.flatten(1).any(dim=1), index, torch.full_like(index, -1))


def shape_sizes(images: Tensor, shapes: Optional[Tensor] = None,
                classifier: Optional[DigitClassifier] = None) -> Tensor:
    r"""Each single-shape image's size word as an index into ``data.SIZES``: 0 "small", 1 "large"; −1 where
    nothing is drawn. The radius is $\hat r = \sqrt{A / a_k}$: $A$ the drawn area in image widths², the
    weights of ``_coverage`` summed and divided by the brightest channel of the colour (``shape_colors``),
    and $a_k$ the unit area (``UNIT_AREAS``) of the shape $k$ seen (``shapes``, default: the shapes
    classifier's reading); "large" if $\hat r \ge$ the middle of ``SCENE_RADIUS_RANGE`` (0.19).

    Measured on 1,000 real single-shape Scenes (64×64, seed 1): $|\hat r - r| < 0.0009$ (0.06 px), 1000/1000
    right. The bare foreground count instead of the weights is off by up to 0.007 and gets 996/1000. What
    it misses are radii that close to 0.19: seed 3 has one, 0.18996, of 1,000 (999/1000).
    """
    check_scenes(images)
    if shapes is None:
        shapes = shape_predictions(to_classifier_size(images), classifier)
    if (not isinstance(shapes, Tensor) or shapes.shape != images.shape[:1] or shapes.is_floating_point()
            or ((shapes < 0) | (shapes >= len(UNIT_AREAS))).any()):
        raise ValueError(f"shapes must be an integer tensor ({len(images)},) of indices into data.SHAPES; got "
                         f"{getattr(shapes, 'dtype', type(shapes).__name__)} {tuple(getattr(shapes, 'shape', ()))}")
    colors = shape_colors(images)
    palette = torch.tensor(list(COLORS.values()), dtype=images.dtype, device=images.device)
    peak = palette.amax(dim=1)[colors.clamp(min=0)]                     # the colour's brightest channel
    area = _coverage(images)[1].sum(dim=(1, 2)) / peak / images.shape[-1] ** 2
    unit = torch.tensor(UNIT_AREAS, dtype=images.dtype, device=images.device)[shapes.to(images.device)]
    large = ((area / unit).sqrt() >= sum(SCENE_RADIUS_RANGE) / 2).long()
    return torch.where(colors >= 0, large, torch.full_like(large, -1))


def pixel_colors(images: Tensor) -> Tensor:
    r"""The palette colour of each foreground pixel, (B, H, W) int64 indexing ``data.COLORS``; −1 on the
    background. Hue, not brightness, decides: the pixel's RGB and every palette colour are divided by their
    brightest channel before the nearest is taken, $\arg\min_k \|p / \max p - c_k / \max c_k\|$, so a
    half-covered edge pixel of orange is orange, not a dark red. Exact on real scenes."""
    check_scenes(images)
    pixels = (images.clamp(-1, 1) + 1) / 2
    b = pixels.amax(dim=1, keepdim=True)
    palette = torch.tensor(list(COLORS.values()), dtype=pixels.dtype, device=images.device)
    palette = palette / palette.amax(dim=1, keepdim=True)
    hue = (pixels / b.clamp(min=1e-6)).permute(0, 2, 3, 1)                          # (B, H, W, 3)
    nearest = (hue.unsqueeze(3) - palette).square().sum(dim=-1).argmin(dim=-1)     # (B, H, W)
    return torch.where(b.squeeze(1) > 0.5, nearest, torch.full_like(nearest, -1))


def _check_captions(captions: Sequence[str], images: Tensor) -> list[list[dict]]:
    """The parsed captions, one per image, or an error naming ``captions``."""
    if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
        raise TypeError(f"captions must be a list of str, one per image; got {type(captions).__name__}")
    if len(captions) != len(images):
        raise ValueError(f"captions must hold one caption per image ({len(images)}); got {len(captions)}")
    return [parse_caption(caption) for caption in captions]


def _single_accuracy(images: Tensor, asked: list[dict], classifier: DigitClassifier) -> dict:
    """{"color", "position", "shape", "size", "all"} over single-shape images and the one object each asks for."""
    def want(key: str, to_index=lambda v: v) -> Tensor:
        return torch.tensor([to_index(a[key]) for a in asked], device=images.device)

    shapes = shape_predictions(to_classifier_size(images), classifier)
    right = {"color": shape_colors(images) == want("color"),
             "position": shape_positions(images) == want("where", POSITIONS.index),
             "shape": shapes == want("shape"),
             "size": shape_sizes(images, shapes) == want("size", SIZES.index)}
    right["all"] = right["color"] & right["position"] & right["shape"] & right["size"]
    return {key: ok.double().mean().item() for key, ok in right.items()}


def _multi_accuracy(images: Tensor, asked: list[list[dict]], classifier: DigitClassifier) -> dict:
    """Per-object {"object_color", "object_shape", "object_both"}, "scene_all" and "n_objects", multi-shape images."""
    owner = torch.tensor([b for b, objects in enumerate(asked) for _ in objects], device=images.device)
    color = torch.tensor([o["color"] for objects in asked for o in objects], device=images.device)
    shape = torch.tensor([o["shape"] for objects in asked for o in objects], device=images.device)
    mine = pixel_colors(images)[owner] == color.view(-1, 1, 1)                  # (N objects, H, W)
    has_color = mine.flatten(1).sum(dim=1) >= MIN_OBJECT_AREA * images.shape[-1] ** 2
    alone = torch.where(mine.unsqueeze(1), images[owner], torch.full_like(images[owner], -1.0))
    has_shape = shape_predictions(to_classifier_size(alone), classifier) == shape
    both = has_color & has_shape
    wrong = torch.zeros(len(asked), device=images.device).index_add_(0, owner, (~both).to(images.dtype))
    return {"object_color": has_color.double().mean().item(), "object_shape": has_shape.double().mean().item(),
            "object_both": both.double().mean().item(), "scene_all": (wrong == 0).double().mean().item(),
            "n_objects": len(owner)}


def scene_accuracy(images: Tensor, captions: Sequence[str], classifier: Optional[DigitClassifier] = None) -> dict:
    r"""How often each image shows what its caption (``data.parse_caption``) asks for, as fractions.

    Single-shape captions ("... at the top left"): ``color`` (``shape_colors``), ``position``
    (``shape_positions``), ``shape`` (the shapes classifier on ``to_classifier_size``), ``size``
    (``shape_sizes``) and ``all`` four at once, over those images. Multi-shape captions, per asked object:
    its pixels are the foreground pixels of its colour (``pixel_colors``); ``object_color`` if they cover
    at least ``MIN_OBJECT_AREA`` of the image (38 px at 64×64), ``object_shape`` if the classifier reads
    the asked shape in the image with every other pixel set to background (−1), ``object_both``; and
    ``scene_all``, the fraction of those images with every object right. ``n_single``, ``n_multi``,
    ``n_objects`` count; the keys of a group with no captions are left out (never NaN).

    Measured on real held-out Scenes (64×64, seed 1, their own captions), the floor of each: 1,000 single-
    shape scenes: color 1.000, position 0.998 (two centres within 0.05 px of a ninth's edge), shape 1.000,
    size 1.000, all 0.998. 1,000 scenes of up to 3 shapes (663 multi-shape, 1,662 objects): object_color
    1.000, object_shape 0.9988 (two misses, both squares of radius 0.122, under the classifier's training
    radii 0.14–0.30), object_both 0.9988, scene_all 0.997.
    """
    check_scenes(images)
    parsed = _check_captions(captions, images)
    classifier = classifier or pretrained.load_classifier(SHAPES_CLASSIFIER, images.device)
    single = [b for b, objects in enumerate(parsed) if len(objects) == 1]
    multi = [b for b, objects in enumerate(parsed) if len(objects) > 1]
    result = {"n_single": len(single), "n_multi": len(multi)}
    if single:
        result |= _single_accuracy(images[single], [parsed[b][0] for b in single], classifier)
    if multi:
        result |= _multi_accuracy(images[multi], [parsed[b] for b in multi], classifier)
    return result


def scenes_reference(n: int = 1000, seed: int = 1, max_shapes: int = 3) -> tuple[Tensor, list[str]]:
    """``n`` held-out Scenes at 64×64 (seed 1: never trained on) and their captions."""
    from .data import Scenes
    return Scenes(n, 64, seed=seed, max_shapes=max_shapes).batch(n)


def evaluate_scenes(samples: Tensor, captions: Sequence[str], classifier: Optional[DigitClassifier] = None,
                    max_shapes: int = 3) -> dict:
    """``scene_accuracy`` plus the Fréchet distance in the shapes classifier's features (at 32×32, through
    ``to_classifier_size``) to as many held-out scenes (seed 1, up to ``max_shapes`` shapes), and the
    floor: the same distance from real scenes (seed 2) to them. ``fd_ratio`` = fd / fd_floor, ~1 is as
    good as real scenes. It is noisy: real scenes of seed 3 score 1.33 (up to 3 shapes) and 1.15 (one
    shape) at n = 1,000, and 0.54 at n = 200; a 3-shape set against the 1-shape reference scores 23."""
    classifier = classifier or pretrained.load_classifier(SHAPES_CLASSIFIER, samples.device)
    result = scene_accuracy(samples, captions, classifier)

    def features_of(images: Tensor) -> Tensor:
        return _apply(classifier, to_classifier_size(images.to(samples.device)), "features", 500)

    f_ref = features_of(scenes_reference(len(samples), 1, max_shapes)[0])
    fd = frechet_distance_from_features(features_of(samples), f_ref)
    floor = frechet_distance_from_features(features_of(scenes_reference(len(samples), 2, max_shapes)[0]), f_ref)
    return result | {"fd": fd, "fd_floor": floor, "fd_ratio": fd / floor}


# -- reconstructions: how close an autoencoder's output is to its input ----------------------------
def psnr(reconstruction: Tensor, images: Tensor) -> Tensor:
    r"""Peak signal-to-noise ratio of each image, in dB: $10\log_{10}(1/\mathrm{MSE})$, the mean squared error
    taken over the image's C·H·W values in [0, 1], i.e. of $(x + 1)/2$ after clamping both batches to
    [-1, 1]. Higher is better: 20 dB is an MSE of 0.01 (a typical error of 0.1), +10 dB a tenth of the MSE;
    an exact reconstruction (MSE 0) gives +inf. Both (B, C, H, W) in [-1, 1] -> (B,)."""
    check_batch(reconstruction, "reconstruction", channels=None)
    check_batch(images, "images", channels=None)
    if reconstruction.shape != images.shape:
        raise ValueError(f"reconstruction and images must have the same shape; got {tuple(reconstruction.shape)} "
                         f"and {tuple(images.shape)}")
    error = ((reconstruction.clamp(-1, 1) - images.clamp(-1, 1)) / 2).pow(2)     # (x̂+1)/2 − (x+1)/2 = (x̂ − x)/2
    return -10 * torch.log10(error.flatten(1).mean(dim=1))
