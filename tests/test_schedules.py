"""Schedules: endpoints, monotonicity, defining formulas, derived tables, devices and bad input."""
import math
import warnings

import pytest
import torch

import minidiff as md


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_tables_are_float64_monotone_and_consistent(name):
    s = md.make_schedule(name, 1000)
    assert s.num_steps == len(s) == 1000
    for table in (s.betas, s.alphas, s.alphas_cumprod, s.alphas_cumprod_prev, s.log_snr):
        assert table.dtype == torch.float64 and table.shape == (1000,)
    assert ((s.betas > 0) & (s.betas < 1)).all()
    assert (s.alphas_cumprod.diff() < 0).all(), "ᾱ_t must strictly decrease"
    assert (s.log_snr.diff() < 0).all(), "log-SNR must strictly decrease"
    torch.testing.assert_close(s.alphas, 1 - s.betas)
    assert s.alphas_cumprod_prev[0] == 1.0
    torch.testing.assert_close(s.alphas_cumprod_prev[1:], s.alphas_cumprod[:-1])


def test_notation_step_t_sits_at_position_t_minus_1():
    """ᾱ_t = ∏_{s=1}^{t} α_s is alphas_cumprod[t − 1]; ᾱ_0 = 1 (the empty product) is alphas_cumprod_prev[0]."""
    s = md.NoiseSchedule.cosine(30)
    for t in (1, 2, 17, 30):                                               # step numbers
        assert s.alphas_cumprod[t - 1].item() == pytest.approx(math.prod(1 - b for b in s.betas[:t].tolist()),
                                                               rel=1e-12)
        assert s.alphas_cumprod_prev[t - 1].item() == pytest.approx(math.prod(1 - b for b in s.betas[:t - 1].tolist()),
                                                                    rel=1e-12)
    assert s.alphas_cumprod_prev[0] == 1.0 == math.prod([])


def test_posterior_variance_over_beta_is_at_most_one_and_rises_to_one():
    """β̃_t / β_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t): 0 at t = 1, below 1 everywhere, and close to 1 as soon as 1 − ᾱ_t
    is large next to β_t, since 1 − β̃_t/β_t = β_t ᾱ_{t−1}/(1 − ᾱ_t) (notebook 02's ratio plot)."""
    for s in (md.NoiseSchedule.linear(1000), md.NoiseSchedule.cosine(1000)):
        ratio = s.posterior_variance / s.betas
        torch.testing.assert_close(ratio, (1 - s.alphas_cumprod_prev) / (1 - s.alphas_cumprod))
        torch.testing.assert_close(1 - ratio, s.betas * s.alphas_cumprod_prev / (1 - s.alphas_cumprod))
        assert ratio[0] == 0 and (ratio < 1).all() and (ratio[1:] > 0).all()
        assert (ratio.diff() > 0).all()                      # monotone for these schedules
        assert ratio[-1] > 0.999
    linear = md.NoiseSchedule.linear(1000)                    # notebook 02: above 0.99 from t = 168, ᾱ_168 ≈ 0.74
    ratio = linear.posterior_variance / linear.betas
    assert int((ratio > 0.99).nonzero()[0]) + 1 == 168 and abs(linear.alphas_cumprod[167] - 0.743) < 1e-3


def test_alphas_cumprod_is_running_product():
    s = md.NoiseSchedule.linear(50)
    expected = torch.tensor([math.prod(1 - b for b in s.betas[: t + 1].tolist()) for t in range(50)],
                            dtype=torch.float64)
    torch.testing.assert_close(s.alphas_cumprod, expected, rtol=1e-12, atol=0)


def test_linear_endpoints():
    s = md.NoiseSchedule.linear(1000, beta_start=1e-4, beta_end=0.02)
    assert s.betas[0].item() == pytest.approx(1e-4)
    assert s.betas[-1].item() == pytest.approx(0.02)
    # DDPM's linear schedule leaves ᾱ_{T−1} ≈ 4e-5: almost pure noise at the end
    assert s.alphas_cumprod[-1].item() == pytest.approx(4.04e-5, rel=0.01)


def test_cosine_matches_its_defining_formula():
    T, s_off = 1000, 0.008
    s = md.NoiseSchedule.cosine(T, s=s_off, max_beta=0.999)
    f = lambda u: math.cos((u + s_off) / (1 + s_off) * math.pi / 2) ** 2
    # ᾱ_t = f((t+1)/T) / f(0) while no β is clipped (every t but the last few)
    for t in [0, 1, 10, 100, 500, 900, 980]:
        assert s.alphas_cumprod[t].item() == pytest.approx(f((t + 1) / T) / f(0), rel=1e-10)
        assert s.betas[t].item() == pytest.approx(min(1 - f((t + 1) / T) / f(t / T), 0.999), rel=1e-10)
    assert s.betas.max().item() == pytest.approx(0.999)   # the clip is active at the end
    assert s.alphas_cumprod[0].item() > 0.9999


def test_sigmoid_endpoints():
    s = md.NoiseSchedule.sigmoid(1000)
    assert s.alphas_cumprod[0] > 0.999 and s.alphas_cumprod[-1] < 1e-5


def test_snr_and_log_snr_agree():
    s = md.NoiseSchedule.cosine(100)
    t = torch.tensor([0, 10, 50, 99])
    abar = s.alphas_cumprod[t]
    torch.testing.assert_close(s.snr(t), abar / (1 - abar))
    torch.testing.assert_close(s.log_snr[t], torch.log(s.snr(t)))
    assert s.snr(5).ndim == 0


def test_posterior_variance_table():
    s = md.NoiseSchedule.linear(100)
    assert s.posterior_variance[0] == 0
    expected = s.betas * (1 - s.alphas_cumprod_prev) / (1 - s.alphas_cumprod)
    torch.testing.assert_close(s.posterior_variance, expected)
    # clipped log: position 0 (β̃_1 = 0) takes position 1's value (β̃_2), the rest exact
    assert s.posterior_log_variance_clipped[0] == s.posterior_log_variance_clipped[1]
    torch.testing.assert_close(s.posterior_log_variance_clipped[1:], s.posterior_variance[1:].log())
    assert torch.isfinite(s.posterior_log_variance_clipped).all()


def test_from_betas_and_single_step():
    s = md.NoiseSchedule(torch.tensor([0.5]))
    assert s.num_steps == 1 and s.alphas_cumprod.item() == 0.5
    assert torch.isfinite(s.posterior_log_variance_clipped).all()
    s32 = md.NoiseSchedule(torch.linspace(0.01, 0.1, 10, dtype=torch.float32))
    assert s32.betas.dtype == torch.float64


def test_to_device_copies_and_keeps_values():
    s = md.NoiseSchedule.cosine(10)
    s2 = s.to("cpu")
    assert s2 is not s and torch.equal(s2.alphas_cumprod, s.alphas_cumprod)
    assert "cosine" in repr(s) and "T=10" in repr(s)


# -- bad input ----------------------------------------------------------------------------------
def test_unknown_name_lists_choices():
    with pytest.raises(ValueError, match=r"name must be one of \['cosine', 'linear', 'sigmoid'\]; got 'cosin'"):
        md.make_schedule("cosin", 10)


@pytest.mark.parametrize("T", [0, -3])
def test_num_steps_below_one(T):
    with pytest.raises(ValueError, match=rf"num_steps \(T\) must be >= 1; got {T}"):
        md.NoiseSchedule.linear(T)


def test_num_steps_not_int():
    with pytest.raises(TypeError, match="num_steps must be an int; got float"):
        md.NoiseSchedule.cosine(10.0)


@pytest.mark.parametrize("betas, match", [
    (torch.tensor([1.0, 0.1]), r"every beta must be in \(0, 1\), except the last, which may be exactly 1"),
    (torch.tensor([0.1, 1.5]), r"every beta must be in \(0, 1\)"),
    (torch.tensor([0.0, 0.1]), r"every beta must be in \(0, 1\)"),
    (torch.tensor([-0.1]), r"every beta must be in \(0, 1\)"),
    (torch.tensor([0.1, float("nan")]), "must be finite"),
    (torch.tensor([[0.1]]), r"non-empty 1-D tensor; got shape \(1, 1\)"),
    (torch.tensor([]), r"non-empty 1-D tensor; got shape \(0,\)"),
])
def test_bad_betas(betas, match):
    with pytest.raises(ValueError, match=match):
        md.NoiseSchedule(betas)


def test_betas_wrong_type():
    with pytest.raises(TypeError, match="betas must be a torch.Tensor; got list"):
        md.NoiseSchedule([0.1, 0.2])
    with pytest.raises(TypeError, match="betas must be a floating tensor; got dtype torch.int64"):
        md.NoiseSchedule(torch.tensor([1, 2]))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match=r"beta_end must be in \(0, 1\); got 1.5"):
        md.NoiseSchedule.linear(10, beta_end=1.5)
    with pytest.raises(ValueError, match=r"max_beta must be in \(0, 1\); got 1.0"):
        md.NoiseSchedule.cosine(10, max_beta=1.0)
    with pytest.raises(ValueError, match="s must be >= 0; got -0.1"):
        md.NoiseSchedule.cosine(10, s=-0.1)
    with pytest.raises(ValueError, match="tau must be > 0"):
        md.NoiseSchedule.sigmoid(10, tau=0)


def test_snr_bad_t():
    s = md.NoiseSchedule.linear(10)
    with pytest.raises(ValueError, match=r"t must be in \[0, 9\]"):
        s.snr(10)


# -- zero terminal SNR (Lin et al. 2024, Algorithm 1) -------------------------------------------
def _scaled_linear(T):
    return md.NoiseSchedule(torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, T, dtype=torch.float64) ** 2)


@pytest.mark.parametrize("make", [lambda: md.NoiseSchedule.linear(1000), lambda: md.NoiseSchedule.cosine(1000),
                                  lambda: md.NoiseSchedule.sigmoid(50), lambda: _scaled_linear(1000),
                                  lambda: md.NoiseSchedule.linear(2)],
                         ids=["linear", "cosine", "sigmoid", "scaled_linear", "T=2"])
def test_rescaled_zero_terminal_snr(make):
    s = make()
    z = s.rescaled_zero_terminal_snr()
    assert z.alphas_cumprod[-1].item() == 0.0 and z.betas[-1].item() == 1.0        # ᾱ_T = 0 exactly, β_T = 1
    assert z.snr(z.num_steps - 1).item() == 0.0 and z.log_snr[-1].item() == -math.inf
    assert z.zero_terminal_snr and not s.zero_terminal_snr
    torch.testing.assert_close(z.sqrt_alphas_cumprod[0], s.sqrt_alphas_cumprod[0], rtol=1e-12, atol=0)  # √ᾱ_1 kept
    # √ᾱ'_t is a straight line in √ᾱ_t through (√ᾱ_T, 0) and (√ᾱ_1, √ᾱ_1)
    a, a_new = s.sqrt_alphas_cumprod, z.sqrt_alphas_cumprod
    slope = a[0] / (a[0] - a[-1])
    torch.testing.assert_close(a_new, slope * (a - a[-1]), rtol=1e-10, atol=1e-14)
    assert (z.alphas_cumprod.diff() < 0).all() and ((z.betas[:-1] > 0) & (z.betas[:-1] < 1)).all()   # monotone
    assert torch.isfinite(z.posterior_variance).all() and torch.isfinite(z.log_snr[:-1]).all()
    torch.testing.assert_close(md.schedules.rescale_zero_terminal_snr(s.betas), z.betas)
    assert "zero terminal SNR" in z.name


def test_rescaled_schedule_moves_and_builds_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")               # ᾱ_T = 0 on purpose is not an underflow
        z = md.NoiseSchedule.linear(1000).rescaled_zero_terminal_snr()
        z2 = z.to("cpu")
    assert z2.zero_terminal_snr and torch.equal(z2.betas, z.betas)


def test_rescale_zero_terminal_snr_bad_input():
    with pytest.raises(ValueError, match=r"at least 2 steps to rescale .*got 1"):
        md.schedules.rescale_zero_terminal_snr(torch.tensor([0.1], dtype=torch.float64))
    with pytest.raises(TypeError, match="betas must be a torch.Tensor; got list"):
        md.schedules.rescale_zero_terminal_snr([0.1, 0.2])


def test_a_beta_of_one_is_allowed_at_the_last_step_only():
    s = md.NoiseSchedule(torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64))
    assert s.alphas_cumprod[-1] == 0 and s.zero_terminal_snr
    with pytest.raises(ValueError, match="except the last, which may be exactly 1"):
        md.NoiseSchedule(torch.tensor([0.1, 1.0, 0.5], dtype=torch.float64))
