r"""Metrics: how good are generated digits, measured in the features of a small digit classifier.

Inception weights cannot be downloaded here, so FID proper is out of reach. Instead a small CNN,
``DigitClassifier`` (``minidiff.nn.classifier``), is trained on the same MNIST digits as the diffusion
models (``python -m minidiff train --recipe classifier``) and shipped (``pretrained.load_classifier()``). Its penultimate activations, ``features(x) ∈ ℝ^D`` (D = 128),
stand in for Inception's pool features:

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

import time
import warnings
from functools import lru_cache
from typing import Optional, Union

import torch
from torch import Tensor, nn

from . import pretrained
from .images import check_batch
from .nn.classifier import DigitClassifier
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
        return pretrained.load_classifier(images.device)
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


def evaluate_model(model: nn.Module, schedule: NoiseSchedule, sampler: SamplerName = "ddim", steps: int = 50,
                   guidance_scale: GuidanceArg = None, draws: int = 1, seed: int = 0) -> dict:
    """The protocol on a class-conditional diffusion model: 1,000 samples (100 per class, unguided unless
    ``guidance_scale``), ``evaluate``d; with ``draws`` > 1, the mean over that many draws (seeds
    ``seed``, ``seed`` + 1, …), since one draw's FD moves by about ±7%. Adds ``sampler``, ``steps``,
    ``draws`` and ``sample_seconds``."""
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be an int >= 1; got {draws!r}")
    device = schedule.device
    labels = torch.arange(NUM_CLASSES * PER_CLASS, device=device) % NUM_CLASSES
    start, results = time.perf_counter(), []
    for draw in range(draws):
        with torch.no_grad():
            x = sample(sampler, model, schedule, (len(labels), 1, 28, 28), steps, labels, guidance_scale,
                       generator=torch.Generator(device).manual_seed(seed + draw))
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
    classifier = classifier or pretrained.load_classifier(samples.device, name=SHAPES_CLASSIFIER)
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
    classifier = classifier or pretrained.load_classifier(samples.device, name=SHAPES_CLASSIFIER)
    result = attribute_accuracy(samples, labels, classifier)
    reference = shapes_reference(len(samples))[0].to(samples.device)
    real = shapes_reference(len(samples), seed=2)[0].to(samples.device)
    f_ref = _apply(classifier, reference, "features", 500)
    fd = frechet_distance_from_features(_apply(classifier, samples, "features", 500), f_ref)
    floor = frechet_distance_from_features(_apply(classifier, real, "features", 500), f_ref)
    return result | {"fd": fd, "fd_floor": floor, "fd_ratio": fd / floor}
