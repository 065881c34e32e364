"""The forward process: every identity notebooks 01–02 state, dtypes, devices and bad input."""
import pytest
import torch

import minidiff as md

T = 100


@pytest.fixture
def s():
    return md.NoiseSchedule.linear(T, beta_start=1e-3, beta_end=0.05)


def test_q_step_is_the_stated_formula(s):
    x_prev, eps = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    t = torch.tensor([0, 5, 99])
    got = md.q_step(x_prev, t, s, noise=eps)
    a, b = s.alphas[t].float().view(3, 1, 1, 1), s.betas[t].float().view(3, 1, 1, 1)
    torch.testing.assert_close(got, a.sqrt() * x_prev + b.sqrt() * eps)


def test_q_sample_at_t0_is_one_step(s):
    x0, eps = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(md.q_sample(x0, 0, s, eps), md.q_step(x0, 0, s, eps))


def test_closed_form_matches_iterated_chain_in_distribution():
    """x_t from t+1 forward steps has the moments of q(x_t|x_0): mean √ᾱ_t x_0, variance 1 − ᾱ_t."""
    torch.manual_seed(0)
    s = md.NoiseSchedule.cosine(50)
    x0 = torch.tensor([1.0, -0.5, 0.0, 0.8])          # 4 "pixels"
    n = 200_000
    x = x0.expand(n, 4).clone()
    for t in range(50):
        x = md.q_step(x, t, s)
        if t in (0, 9, 30, 49):
            abar = s.alphas_cumprod[t].item()
            torch.testing.assert_close(x.mean(0), abar ** 0.5 * x0, atol=0.01, rtol=0)
            torch.testing.assert_close(x.var(0), torch.full((4,), 1 - abar), atol=0.01, rtol=0)
            closed = md.q_sample(x0.expand(n, 4), t, s)
            torch.testing.assert_close(closed.mean(0), x.mean(0), atol=0.015, rtol=0)
            torch.testing.assert_close(closed.var(0), x.var(0), atol=0.015, rtol=0)


def test_variance_preserving(s):
    """Unit-variance data keeps unit variance at every t: ᾱ_t·1 + (1 − ᾱ_t) = 1."""
    torch.manual_seed(1)
    x0 = torch.randn(100_000, 1)
    for t in (0, 50, 99):
        assert md.q_sample(x0, t, s).var().item() == pytest.approx(1.0, abs=0.02)


def test_two_steps_compose_exactly():
    """Two steps with noises ε1, ε2 equal one closed-form jump with the combined noise."""
    s = md.NoiseSchedule.linear(10, 0.1, 0.3)
    x0, e1, e2 = torch.randn(3, 7, dtype=torch.float64).unbind(0)
    x0, e1, e2 = x0[None], e1[None], e2[None]
    x1 = md.q_step(md.q_step(x0, 0, s, e1), 1, s, e2)
    a1, b0, b1 = s.alphas[1], s.betas[0], s.betas[1]
    combined = ((a1 * b0).sqrt() * e1 + b1.sqrt() * e2) / (1 - s.alphas_cumprod[1]).sqrt()
    torch.testing.assert_close(x1, md.q_sample(x0, 1, s, combined))


def test_posterior_matches_gaussian_algebra():
    """q(x_{t−1}|x_t,x_0) ∝ q(x_t|x_{t−1}) q(x_{t−1}|x_0): precision-weighted combination of two Gaussians."""
    s = md.NoiseSchedule.cosine(20)
    x0, x_t = torch.randn(2, 6, dtype=torch.float64).unbind(0)
    x0, x_t = x0[None], x_t[None]
    for t in (1, 5, 19):
        a_t, b_t, abar_prev = s.alphas[t], s.betas[t], s.alphas_cumprod_prev[t]
        # likelihood in x_{t−1}: N(x_t/√α_t, β_t/α_t); prior: N(√ᾱ_{t−1} x_0, 1 − ᾱ_{t−1})
        prec = a_t / b_t + 1 / (1 - abar_prev)
        mean = (a_t.sqrt() / b_t * x_t + abar_prev.sqrt() / (1 - abar_prev) * x0) / prec
        got_mean, got_var = md.q_posterior(x0, x_t, t, s)
        torch.testing.assert_close(got_mean, mean)
        torch.testing.assert_close(got_var.flatten(), (1 / prec).reshape(1))


def test_posterior_by_monte_carlo():
    """Sample x_{t−1} ~ q(·|x_0), then x_t ~ q(x_t|x_{t−1}); among draws, E[x_{t−1}|x_t] is linear in x_t."""
    torch.manual_seed(0)
    s = md.NoiseSchedule.linear(10, 0.05, 0.2)
    t, n = 4, 400_000
    x0 = torch.full((n, 1), 0.7)
    x_prev = md.q_sample(x0, t - 1, s)
    x_t = md.q_step(x_prev, t, s)
    mean, var = md.q_posterior(x0, x_t, t, s)
    resid = x_prev - mean
    assert resid.mean().item() == pytest.approx(0, abs=0.005)
    assert resid.var().item() == pytest.approx(var.item(), rel=0.02)
    assert torch.corrcoef(torch.stack([resid[:, 0], x_t[:, 0]]))[0, 1].abs() < 0.01


def test_posterior_at_t0_is_x0(s):
    x0, x_t = torch.randn(2, 1, 3, 3), torch.randn(2, 1, 3, 3)
    mean, var = md.q_posterior(x0, x_t, 0, s)
    torch.testing.assert_close(mean, x0)
    assert (var == 0).all()


def test_predict_identities_invert_q_sample(s):
    x0, eps = torch.randn(4, 2, 3, 3, dtype=torch.float64), torch.randn(4, 2, 3, 3, dtype=torch.float64)
    t = torch.tensor([0, 1, 50, 99])
    x_t = md.q_sample(x0, t, s, eps)
    torch.testing.assert_close(md.predict_x0_from_eps(x_t, t, eps, s), x0)
    torch.testing.assert_close(md.predict_eps_from_x0(x_t, t, x0, s), eps)


def _log_normal(x, mean, var):
    """log N(x; mean, var I), summed over all entries (float64)."""
    return (-0.5 * (x - mean) ** 2 / var - 0.5 * torch.log(2 * torch.pi * var)).sum()


def test_posterior_is_bayes_rule_completing_the_square():
    """Notebook 02's derivation: q(x_{t−1}|x_t,x_0) q(x_t|x_0) = q(x_t|x_{t−1}) q(x_{t−1}|x_0) for every
    x_{t−1}, with q_posterior's mean and variance (log densities, float64, step t at position t − 1)."""
    s = md.NoiseSchedule.linear(100)
    x0, x_t = torch.randn(2, 5, dtype=torch.float64).unbind(0)
    for t in (2, 3, 50, 100):                                                # step numbers: position t − 1
        i = t - 1
        mean, var = md.q_posterior(x0[None], x_t[None], i, s)
        abar_t, abar_prev, alpha_t, beta_t = s.alphas_cumprod[i], s.alphas_cumprod_prev[i], s.alphas[i], s.betas[i]
        for _ in range(3):                                                   # any x_{t−1}
            x_prev = torch.randn(5, dtype=torch.float64) * 2
            joint = (_log_normal(x_t, alpha_t.sqrt() * x_prev, beta_t)
                     + _log_normal(x_prev, abar_prev.sqrt() * x0, 1 - abar_prev))
            bayes = _log_normal(x_prev, mean[0], var.flatten()[0]) + _log_normal(x_t, abar_t.sqrt() * x0, 1 - abar_t)
            assert joint.item() == pytest.approx(bayes.item(), rel=1e-10, abs=1e-10)


def test_posterior_precision_and_mean_complete_the_square():
    """The completed square's coefficients: 1/β̃_t = α_t/β_t + 1/(1 − ᾱ_{t−1}), and μ̃_t = β̃_t (√α_t/β_t x_t
    + √ᾱ_{t−1}/(1 − ᾱ_{t−1}) x_0), for every step t ≥ 2 at once."""
    s = md.NoiseSchedule.cosine(200)
    a, b, abar_prev = s.alphas[1:], s.betas[1:], s.alphas_cumprod_prev[1:]
    torch.testing.assert_close(1 / s.posterior_variance[1:], a / b + 1 / (1 - abar_prev))
    x0, x_t = torch.randn(2, 199, 1, dtype=torch.float64).unbind(0)
    t = torch.arange(1, 200)
    mean, _ = md.q_posterior(x0, x_t, t, s)
    expected = s.posterior_variance[1:, None] * (a.sqrt()[:, None] / b[:, None] * x_t
                                                 + abar_prev.sqrt()[:, None] / (1 - abar_prev[:, None]) * x0)
    torch.testing.assert_close(mean, expected)


def test_posterior_mean_eps_form():
    """μ̃_t(x_t, x_0) = (x_t − β_t/√(1 − ᾱ_t) ε)/√α_t when x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (DDPM eq. 11 with the
    true ε), at every position including 0 (step 1)."""
    s = md.NoiseSchedule.linear(1000)
    i = torch.tensor([0, 1, 10, 400, 998, 999])
    x0, eps = torch.randn(2, 6, 3, dtype=torch.float64).unbind(0)
    x_t = md.q_sample(x0, i, s, eps)
    eps_form = (x_t - (s.betas[i] / (1 - s.alphas_cumprod[i]).sqrt())[:, None] * eps) / s.alphas[i].sqrt()[:, None]
    torch.testing.assert_close(md.q_posterior(x0, x_t, i, s)[0], eps_form, rtol=1e-9, atol=1e-9)


def test_eps_is_minus_the_scaled_score_of_the_jump():
    """∇_{x_t} log q(x_t | x_0) = −ε / √(1 − ᾱ_t): predicting ε is predicting the score (Ho et al. 2020 §3.2)."""
    s = md.NoiseSchedule.linear(100)
    x0, eps = torch.randn(2, 4, 5, dtype=torch.float64).unbind(0)
    i = torch.tensor([0, 9, 50, 99])
    x_t = md.q_sample(x0, i, s, eps).requires_grad_(True)
    abar = s.alphas_cumprod[i][:, None]
    _log_normal(x_t, abar.sqrt() * x0, 1 - abar).backward()
    torch.testing.assert_close(x_t.grad, -eps / (1 - abar).sqrt())


def test_x0_eps_v_conversions_round_trip(s):
    """From any one of ε, x_0, v (with x_t) the other two follow, and converting back returns the first."""
    x0, eps = torch.randn(2, 4, 1, 3, 3, dtype=torch.float64).unbind(0)
    t = torch.tensor([0, 1, 50, 99])
    x_t = md.q_sample(x0, t, s, eps)
    v = md.predict_v(x0, eps, t, s)
    for target, output in (("eps", eps), ("x0", x0), ("v", v)):
        got_eps, got_x0 = md.eps_and_x0(output, x_t, t, s, target)
        torch.testing.assert_close(got_eps, eps)
        torch.testing.assert_close(got_x0, x0)
        torch.testing.assert_close(md.diffusion.training_target(target, got_x0, got_eps, t, s), output)
    # v = √ᾱ ε − √(1 − ᾱ) x_0 is a rotation of (x_0, ε): ‖v‖² + ‖x_t‖² = ‖x_0‖² + ‖ε‖²
    torch.testing.assert_close(v.square() + x_t.square(), x0.square() + eps.square())


# -- the chain, step by step --------------------------------------------------------------------
def test_q_chain_records_the_image_after_k_steps(s):
    x0, noise = torch.randn(3, 1, 4, 4), torch.randn(T, 3, 1, 4, 4)
    steps = [5, 0, 1, 100]                                     # any order; 0 is x_0, T the last step
    trajectory = md.q_chain(x0, s, steps, noise)
    assert trajectory.shape == (4, 3, 1, 4, 4)
    x = x0
    for k in range(1, T + 1):
        x = md.q_step(x, k - 1, s, noise[k - 1])               # step k uses position k − 1
        if k in steps:
            torch.testing.assert_close(trajectory[steps.index(k)], x)
    assert torch.equal(trajectory[1], x0)
    torch.testing.assert_close(trajectory[2], md.q_sample(x0, 0, s, noise[0]))   # one step = the jump to t = 1
    assert md.q_chain(x0, s, [3], noise[:3]).shape == (1, 3, 1, 4, 4)            # noise only up to the last step


def test_q_chain_draws_fresh_noise_and_checks_its_arguments(s):
    torch.manual_seed(0)
    x0 = torch.zeros(20000, 1)
    assert md.q_chain(x0, s, [T], None)[0].var().item() == pytest.approx(1 - s.alphas_cumprod[-1].item(), rel=0.05)
    with pytest.raises(ValueError,
                       match=r"steps must be numbers of steps in \[0, 100\] \(0 is x_0, T=100\); got \[101\]"):
        md.q_chain(x0, s, [0, 101])
    with pytest.raises(TypeError, match="steps must be a list of ints"):
        md.q_chain(x0, s, 5)
    with pytest.raises(TypeError, match="steps must hold ints"):
        md.q_chain(x0, s, [1.5])
    with pytest.raises(ValueError, match="at least one"):
        md.q_chain(x0, s, [])
    with pytest.raises(ValueError, match=r"noise must have shape \(≥ 7, 20000, 1\)"):
        md.q_chain(x0, s, [7], torch.randn(6, 20000, 1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_dtypes_follow_the_input(s, dtype):
    x0 = torch.randn(2, 1, 4, 4, dtype=dtype)
    assert md.q_sample(x0, 3, s).dtype == dtype
    assert md.q_step(x0, torch.tensor([1, 2]), s).dtype == dtype
    mean, var = md.q_posterior(x0, x0, 3, s)
    assert mean.dtype == var.dtype == dtype


def test_any_image_shape_and_int_t(s):
    for shape in [(5,), (5, 3), (2, 3, 8, 8), (2, 1, 2, 4, 4)]:
        x0 = torch.randn(shape)
        assert md.q_sample(x0, 7, s).shape == shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_and_no_silent_moves(s):
    sc = s.to("cuda")
    x0 = torch.randn(2, 1, 4, 4, device="cuda")
    t = torch.tensor([1, 2], device="cuda")
    assert md.q_sample(x0, t, sc).device.type == "cuda"
    with pytest.raises(ValueError, match="the schedule is on cpu but x is on cuda"):
        md.q_sample(x0, 1, s)


# -- bad input ----------------------------------------------------------------------------------
def test_t_out_of_range(s):
    x = torch.randn(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"t must be in \[0, 99\] \(positions of steps 1 … 100\); got 100"):
        md.q_sample(x, 100, s)
    with pytest.raises(ValueError, match=r"got values from -1 to 3"):
        md.q_sample(x, torch.tensor([-1, 3]), s)


def test_t_float_dtype(s):
    with pytest.raises(TypeError, match=r"t must hold integer timesteps \(torch.long\); got dtype torch.float32"):
        md.q_sample(torch.randn(2, 1, 4, 4), torch.tensor([1.0, 2.0]), s)
    with pytest.raises(TypeError, match="t must be an int or a LongTensor; got float"):
        md.q_sample(torch.randn(2, 1, 4, 4), 1.0, s)


def test_t_wrong_batch_size(s):
    with pytest.raises(ValueError, match="t has 3 entries but x has batch size 2"):
        md.q_sample(torch.randn(2, 1, 4, 4), torch.tensor([1, 2, 3]), s)


def test_noise_wrong_shape(s):
    with pytest.raises(ValueError, match=r"noise must have the shape of x0, \(2, 1, 4, 4\); got \(2, 1, 4\)"):
        md.q_sample(torch.randn(2, 1, 4, 4), 1, s, noise=torch.randn(2, 1, 4))


def test_x0_not_floating(s):
    with pytest.raises(TypeError, match="x0 must be a floating tensor .* got dtype torch.uint8"):
        md.q_sample(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), 1, s)
    with pytest.raises(TypeError, match="x_prev must be a torch.Tensor; got ndarray"):
        import numpy as np
        md.q_step(np.zeros((2, 3)), 1, s)


def test_posterior_shape_mismatch(s):
    with pytest.raises(ValueError, match=r"x_t must have the shape of x0"):
        md.q_posterior(torch.randn(2, 3), torch.randn(2, 4), 1, s)


def test_schedule_on_other_device_is_an_error_not_a_move(s, monkeypatch):
    x = torch.randn(2, 3)
    fake = torch.empty(0, device="meta")
    monkeypatch.setattr(s, "sqrt_alphas_cumprod", s.sqrt_alphas_cumprod.to("meta"))
    with pytest.raises(ValueError, match="the schedule is on meta but x is on cpu; nothing is moved silently"):
        md.q_sample(x, 1, s)
    del fake


def test_t_on_other_device(s):
    # t's device must match the schedule's; here checked with the meta device
    with pytest.raises(ValueError, match="t is on meta but the schedule is on cpu"):
        md.schedules.check_timesteps(torch.tensor([1], device="meta"), 10, device=torch.device("cpu"))
