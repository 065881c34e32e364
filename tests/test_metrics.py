"""Metrics: Fréchet distance and KID against closed forms, the shipped classifier, the floor, bad input."""
import pytest
import torch
import torch.nn.functional as F

import minidiff as md
from minidiff import metrics as M
from minidiff import pretrained


@pytest.fixture(scope="module")
def heldout():
    return M.reference_images()


def random_covariance(D: int, generator: torch.Generator) -> torch.Tensor:
    A = torch.randn(D, D, generator=generator, dtype=torch.float64)
    return A @ A.T / D + 0.1 * torch.eye(D, dtype=torch.float64)


# -- Fréchet distance ---------------------------------------------------------------------------
def test_fd_of_diagonal_gaussians_is_the_closed_form():
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, -1.0, 2.0])
    a, b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    # diagonal covariances commute: (Σ₁Σ₂)^{1/2} = diag(√(ab)), so d² = ‖μ₁−μ₂‖² + Σ(√a − √b)²
    expected = (mu1 - mu2).square().sum() + (a.sqrt() - b.sqrt()).square().sum()
    got = M.frechet_distance_gaussians(mu1, torch.diag(a), mu2, torch.diag(b))
    assert got == pytest.approx(expected.item(), abs=1e-12)


def test_fd_of_full_gaussians_matches_scipy_sqrtm():
    linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(0)
    s1, s2 = random_covariance(20, g), random_covariance(20, g)
    mu1, mu2 = torch.randn(20, generator=g, dtype=torch.float64), torch.randn(20, generator=g, dtype=torch.float64)
    covmean = linalg.sqrtm((s1 @ s2).numpy()).real
    expected = ((mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * covmean.trace()).item()
    assert M.frechet_distance_gaussians(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_fd_is_symmetric_nonnegative_and_zero_for_equal_gaussians():
    g = torch.Generator().manual_seed(1)
    s1, s2, mu = random_covariance(8, g), random_covariance(8, g), torch.zeros(8, dtype=torch.float64)
    assert M.frechet_distance_gaussians(mu, s1, mu + 1, s2) == pytest.approx(
        M.frechet_distance_gaussians(mu + 1, s2, mu, s1), rel=1e-10)
    assert 0 <= M.frechet_distance_gaussians(mu, s1, mu, s1) < 1e-10
    singular = torch.zeros(8, 8, dtype=torch.float64)            # rank 0: eigenvalues clamp to 0
    assert M.frechet_distance_gaussians(mu, singular, mu, s2) == pytest.approx(s2.trace().item(), rel=1e-10)


def test_fd_from_features_estimates_the_gaussians_distance():
    g = torch.Generator().manual_seed(2)
    n, D = 200_000, 4
    a, b = torch.tensor([1.0, 2.0, 0.5, 1.0]), torch.tensor([0.5, 2.0, 1.0, 3.0])
    f1 = torch.randn(n, D, generator=g, dtype=torch.float64) * a.sqrt()
    f2 = torch.randn(n, D, generator=g, dtype=torch.float64) * b.sqrt() + 1.0
    expected = D * 1.0 + (a.sqrt() - b.sqrt()).square().sum().item()
    assert M.frechet_distance_from_features(f1, f2) == pytest.approx(expected, rel=0.02)
    assert M.fid_from_features(f1, f1) == pytest.approx(0.0, abs=1e-9)


def test_gaussian_fit_is_mean_and_unbiased_covariance():
    f = torch.randn(50, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    mu, sigma = M.gaussian_fit(f)
    torch.testing.assert_close(mu, f.mean(0))
    torch.testing.assert_close(sigma, torch.cov(f.T))


# -- kernel distance ----------------------------------------------------------------------------
def test_mmd2_unbiased_matches_a_double_loop():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    k = lambda u, v: (u @ v / 3 + 1) ** 3                                  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / (6 * 5)
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    xy = sum(k(x[i], y[j]) for i in range(6) for j in range(5)) / (6 * 5)
    assert M.mmd2_unbiased(x, y) == pytest.approx((xx + yy - 2 * xy).item(), rel=1e-10)


def test_kid_is_near_zero_for_one_distribution_and_positive_after_a_shift():
    g = torch.Generator().manual_seed(5)
    f1, f2 = torch.randn(1000, 16, generator=g), torch.randn(1000, 16, generator=g)
    same, same_std = M.kid_from_features(f1, f2)
    shifted, shifted_std = M.kid_from_features(f1, f2 + 0.5)
    assert same_std > 0 and shifted_std > 0
    assert abs(same) < 3 * same_std + 1e-3, "unbiased: its mean is 0 for equal distributions"
    assert shifted > 10 * (abs(same) + same_std)


def test_kid_is_reproducible_from_its_seed_and_checks_subset_size():
    g = torch.Generator().manual_seed(6)
    f1, f2 = torch.randn(100, 4, generator=g), torch.randn(100, 4, generator=g)
    assert M.kid_from_features(f1, f2, seed=3) == M.kid_from_features(f1, f2, seed=3)
    assert M.kid_from_features(f1, f2, subsets=1)[1] == 0.0
    with pytest.raises(ValueError, match=r"subset_size must be in \[2, 100\].*got 101"):
        M.kid_from_features(f1, f2, subset_size=101)
    with pytest.raises(ValueError, match="subsets must be >= 1; got 0"):
        M.kid_from_features(f1, f2, subsets=0)


# -- the classifier -----------------------------------------------------------------------------
def test_classifier_shapes_and_size():
    model = M.DigitClassifier().eval()
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    assert model(x).shape == (3, 10)
    feats = model.features(x)
    assert feats.shape == (3, model.config.feature_dim) and (feats >= 0).all(), "features come after the ReLU"
    assert 100_000 <= sum(p.numel() for p in model.parameters()) <= 300_000


def test_random_affine_with_no_motion_is_the_identity_and_keeps_the_background_black(heldout):
    x, g = heldout[0][:8], torch.Generator().manual_seed(0)
    torch.testing.assert_close(md.data.random_affine(x, g, degrees=0, shift=0, scale=0), x, atol=1e-5, rtol=0)
    moved = md.data.random_affine(x, g)
    assert moved.shape == x.shape and moved.min() >= -1 - 1e-6 and moved.max() <= 1 + 1e-6
    assert moved[..., 0, :].max() < -0.9, "the border of a digit image stays background"


def test_shipped_classifier_accuracy(heldout):
    images, labels = heldout
    assert M.class_accuracy(images, labels) >= 0.98
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    assert 0.05 <= M.class_accuracy(images, shuffled) <= 0.15


def test_features_leave_a_training_classifier_in_training_mode(heldout):
    model = M.DigitClassifier().train()
    feats = M.features(heldout[0][:4], model)
    assert feats.shape == (4, 128) and model.training
    # eval mode inside: no dropout, BatchNorm's running statistics, so twice gives the same features
    torch.testing.assert_close(feats, M.features(heldout[0][:4], model))


# -- the protocol and its floor -----------------------------------------------------------------
def test_floor_is_small_and_recorded_in_the_manifest():
    floor = M.reference_floor()
    shipped = pretrained.read_manifest()["classifier"]["metrics"]
    assert floor["fd"] == pytest.approx(shipped["floor_fd"], rel=1e-3)
    assert floor["kid"][0] == pytest.approx(shipped["floor_kid"], abs=1e-4)
    assert 0 < floor["fd"] < 5
    images, labels = M.floor_images()
    assert images.shape == (1000, 1, 28, 28) and (labels.bincount() == 100).all()


def test_noise_and_blur_score_far_above_the_floor(heldout):
    images, labels = heldout
    floor = M.reference_floor()["fd"]
    noise = torch.rand(1000, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert M.frechet_distance(noise) > 20 * floor
    blurred = F.conv2d(images + 1, torch.ones(1, 1, 5, 5) / 25, padding=2) - 1
    assert M.frechet_distance(blurred) > 5 * floor
    assert M.kernel_distance(noise)[0] > M.kernel_distance(blurred)[0] > M.reference_floor()["kid"][0]


def test_evaluate_returns_every_number_and_real_digits_score_one():
    images, labels = M.floor_images()
    result = M.evaluate(images, labels)
    assert set(result) == {"fd", "fd_floor", "fd_ratio", "kid", "kid_std", "kid_floor", "accuracy"}
    assert result["fd_ratio"] == pytest.approx(1.0)
    assert result["accuracy"] > 0.98
    assert "accuracy" not in M.evaluate(images)
    with pytest.warns(UserWarning, match="only comparable at n = 1000"):
        M.evaluate(images[:500])


def test_frechet_distance_against_an_explicit_reference_is_zero_for_itself(heldout):
    assert M.frechet_distance(heldout[0], heldout[0]) == pytest.approx(0.0, abs=1e-6)


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("images, error, message", [
    ([[0.0]], TypeError, r"images must be a torch.Tensor"),
    (torch.zeros(2, 1, 28, 28, dtype=torch.uint8), TypeError, r"images must be a float tensor.*got torch.uint8"),
    (torch.zeros(2, 28, 28), ValueError, r"shape \(B, 1, 28, 28\).*got \(2, 28, 28\)"),
    (torch.zeros(2, 3, 28, 28), ValueError, r"got \(2, 3, 28, 28\)"),
    (torch.zeros(0, 1, 28, 28), ValueError, r"B >= 1"),
    (torch.full((2, 1, 28, 28), float("nan")), ValueError, r"NaN"),
    (torch.full((2, 1, 28, 28), 255.0), ValueError, r"must be in \[-1, 1\].*255"),
])
def test_bad_images_are_named(images, error, message):
    with pytest.raises(error, match=message):
        M.features(images)


def test_bad_labels_are_named(heldout):
    images = heldout[0][:4]
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        M.class_accuracy(images, torch.zeros(4))
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\).*got \(3,\)"):
        M.class_accuracy(images, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"digits in \[0, 10\).*\[0, 10\]"):
        M.class_accuracy(images, torch.tensor([0, 1, 2, 10]))
    with pytest.raises(ValueError, match="samples must have shape"):
        M.evaluate(torch.zeros(4, 1, 32, 32))


def test_bad_feature_and_gaussian_shapes_are_named():
    with pytest.raises(ValueError, match=r"same D; got \(10, 3\) and \(10, 4\)"):
        M.frechet_distance_from_features(torch.zeros(10, 3), torch.zeros(10, 4))
    with pytest.raises(ValueError, match=r"sigma2 must have shape \(3, 3\)"):
        M.frechet_distance_gaussians(torch.zeros(3), torch.eye(3), torch.zeros(3), torch.eye(2))
    with pytest.raises(ValueError, match="at least 2 rows"):
        M.frechet_distance_from_features(torch.zeros(1, 3), torch.zeros(5, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device")
def test_classifier_on_another_device_is_an_error(heldout):
    with pytest.raises(ValueError, match="classifier is on cpu but the images are on cuda"):
        M.features(heldout[0][:4].cuda(), M.DigitClassifier())


def test_within_class_diversity_is_zero_for_copies_and_ranks_real_above_copies(heldout):
    images, labels = heldout
    x, y = images[:200], labels[:200]
    real = M.within_class_diversity(x, y)
    assert real > 0
    copies = x[y == 3][:1].repeat(10, 1, 1, 1)
    assert M.within_class_diversity(copies, torch.full((10,), 3)) == pytest.approx(0.0, abs=1e-6)
    # halving the variety (each image twice) lowers the mean distance between distinct samples
    assert M.within_class_diversity(torch.cat([x[:100], x[:100]]), torch.cat([y[:100], y[:100]])) < real
    with pytest.raises(ValueError, match="two samples"):
        M.within_class_diversity(x[:1], y[:1])


def test_the_colour_of_a_shape_is_read_off_its_pixels_exactly():
    images, labels = md.metrics.shapes_reference(500, seed=5)
    assert torch.equal(md.metrics.shape_colors(images), labels[:, 1])
    assert md.metrics.shape_colors(-torch.ones(2, 3, 32, 32)).tolist() == [-1, -1]     # nothing drawn


def test_attribute_accuracy_counts_each_attribute_and_both():
    images, labels = md.metrics.shapes_reference(40, seed=6)
    wrong_colour = labels.clone()
    wrong_colour[:10, 1] = (wrong_colour[:10, 1] + 1) % 8
    classifier = _ShapeOracle(labels[:, 0])
    r = md.metrics.attribute_accuracy(images, wrong_colour, classifier)
    assert r == {"shape": 1.0, "color": 0.75, "both": 0.75}
    with pytest.raises(ValueError, match=r"labels must be an integer tensor \(40, 2\)"):
        md.metrics.attribute_accuracy(images, labels[:, 0], classifier)
    with pytest.raises(ValueError, match=r"must have shape \(B, 3, 32, 32\)"):
        md.metrics.attribute_accuracy(images[:, :, :28, :28], labels, classifier)


class _ShapeOracle(torch.nn.Module):
    """A stand-in classifier that answers the given shapes, in order (the real one is a shipped file)."""
    def __init__(self, shapes):
        super().__init__()
        self.shapes, self.w = shapes, torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.nn.functional.one_hot(self.shapes[:len(x)], 4).float() + 0 * self.w


def test_the_shipped_shapes_classifier_reads_held_out_shapes():
    images, labels = md.metrics.shapes_reference(200, seed=7)
    predicted = md.metrics.shape_predictions(images)
    assert predicted.shape == (200,) and (predicted == labels[:, 0]).float().mean() >= 0.99
    assert torch.equal(md.metrics.shape_predictions(images[:40], _ShapeOracle(labels[:40, 0])), labels[:40, 0])


# -- notebook 05: real against real, the bias of FD and the unbiasedness of KID ------------------------
@pytest.fixture(scope="module")
def real_features():
    """The shipped classifier's features of 1,200 real training digits (one pool to split at random)."""
    return M.features(md.mnist("train").images[:1200])


def _real_pairs(features, n, draws, seed=0):
    """``draws`` pairs of disjoint random sets of ``n`` rows of ``features``."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(draws):
        order = torch.randperm(len(features), generator=g)
        yield features[order[:n]], features[order[n:2 * n]]


def test_fd_of_real_against_real_is_biased_and_the_bias_falls_with_n(real_features):
    mean_fd = {n: sum(M.frechet_distance_from_features(a, b) for a, b in _real_pairs(real_features, n, 4)) / 4
               for n in (50, 150, 600)}
    assert mean_fd[50] > 2 * mean_fd[150] > 2 * mean_fd[600] > 0      # 0 would be an unbiased estimate


def test_kid_of_real_against_real_averages_to_zero_within_its_noise(real_features):
    """KID (the unbiased MMD²) of two random halves of one pool has mean exactly 0 (every pair of digits is as
    likely within a half as across), so its mean over draws is 0 within the standard error; the biased MMD²,
    which keeps each point's kernel with itself, is positive on every draw."""
    values, biased = [], []
    for a, b in _real_pairs(real_features, 100, 30, seed=1):
        values.append(M.mmd2_unbiased(a, b))
        kxx, kyy = M.polynomial_kernel(a.double(), a.double()), M.polynomial_kernel(b.double(), b.double())
        biased.append((kxx.mean() + kyy.mean() - 2 * M.polynomial_kernel(a.double(), b.double()).mean()).item())
    values = torch.tensor(values, dtype=torch.float64)
    assert abs(values.mean()) < 3 * values.std() / len(values) ** 0.5
    assert min(biased) > 0
