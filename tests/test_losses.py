"""The training objective: targets, the ε/x0/v identities, weightings, label dropout, bad input."""
import pytest
import torch

import minidiff as md
from minidiff.guidance import drop_labels
from minidiff.losses import diffusion_loss, gaussian_kl, loss_weight, training_target, vlb_weight


@pytest.fixture
def s():
    return md.NoiseSchedule.cosine(100)


def test_v_conversions_are_inverse(s):
    x0, eps = torch.randn(2, 4, 1, 3, 3, dtype=torch.float64).unbind(0)
    t = torch.tensor([0, 10, 50, 99])
    x_t = md.q_sample(x0, t, s, eps)
    v = md.predict_v(x0, eps, t, s)
    torch.testing.assert_close(md.predict_x0_from_v(x_t, t, v, s), x0)
    torch.testing.assert_close(md.predict_eps_from_v(x_t, t, v, s), eps)
    for target, out in (("eps", eps), ("x0", x0), ("v", v)):
        e, x = md.eps_and_x0(out, x_t, t, s, target)
        torch.testing.assert_close(e, eps)
        torch.testing.assert_close(x, x0)


def test_error_scales_between_targets(s):
    """For a fixed x_t: ‖Δx0‖² = ‖Δε‖²/SNR and ‖Δv‖² = ‖Δε‖²(1 + SNR)/SNR."""
    x0, eps, eps_hat = torch.randn(3, 4, 1, 5, 5, dtype=torch.float64).unbind(0)
    t = torch.tensor([3, 20, 60, 90])
    x_t = md.q_sample(x0, t, s, eps)
    x0_hat = md.predict_x0_from_eps(x_t, t, eps_hat, s)
    v_hat = md.predict_v(x0_hat, eps_hat, t, s)
    err = lambda a, b: (a - b).pow(2).flatten(1).sum(1)
    snr = s.snr(t)
    torch.testing.assert_close(err(x0_hat, x0), err(eps_hat, eps) / snr)
    torch.testing.assert_close(err(v_hat, md.predict_v(x0, eps, t, s)), err(eps_hat, eps) * (1 + snr) / snr)


def test_weightings_in_each_target_scale():
    snr = torch.tensor([0.01, 1.0, 100.0], dtype=torch.float64)
    torch.testing.assert_close(loss_weight("min_snr", "eps", snr), snr.clamp(max=5) / snr)
    torch.testing.assert_close(loss_weight("min_snr", "x0", snr), snr.clamp(max=5))
    torch.testing.assert_close(loss_weight("min_snr", "v", snr), snr.clamp(max=5) / (snr + 1))
    torch.testing.assert_close(loss_weight("p2", "eps", snr), 1 / (1 + snr))
    assert (loss_weight(None, "v", snr) == 1).all()


def test_weighted_losses_agree_across_targets(s):
    """The same ε̂ scored as ε, x0 or v with the same weighting gives the same loss."""
    torch.manual_seed(0)
    x0, eps = torch.randn(2, 8, 1, 4, 4, dtype=torch.float64).unbind(0)
    t = torch.randint(1, 100, (8,))
    wrong = lambda x_t, t: 0.3 * torch.randn_like(x_t)            # some ε̂, fixed by a seed below
    def scored(target):
        torch.manual_seed(1)
        eps_hat = wrong(x0, t)
        def model(x_t, tt):
            e, x = md.eps_and_x0(eps_hat, x_t, tt, s, "eps")
            return {"eps": e, "x0": x, "v": md.predict_v(x, e, tt, s)}[target]
        return diffusion_loss(model, x0, s, target=target, weighting="min_snr", t=t, noise=eps)
    torch.testing.assert_close(scored("x0"), scored("eps"))
    torch.testing.assert_close(scored("v"), scored("eps"))


def test_perfect_model_has_zero_loss(s):
    x0, eps = torch.randn(2, 4, 1, 4, 4).unbind(0)
    t = torch.tensor([1, 2, 3, 4])
    for target in ("eps", "x0", "v"):
        perfect = lambda x_t, tt: training_target(target, x0, eps, tt, s)
        assert diffusion_loss(perfect, x0, s, target=target, t=t, noise=eps).item() < 1e-10


def test_zero_model_eps_loss_is_one(s):
    torch.manual_seed(0)
    x0 = torch.randn(4096, 1, 2, 2)
    loss = diffusion_loss(lambda x, t: torch.zeros_like(x), x0, s)
    assert loss.item() == pytest.approx(1.0, abs=0.03)


def test_label_dropout_rate():
    g = torch.Generator().manual_seed(0)
    y = torch.zeros(100_000, dtype=torch.long)
    dropped = drop_labels(y, 0.1, 10, generator=g)
    assert (dropped == 10).float().mean().item() == pytest.approx(0.1, abs=0.005)
    assert set(dropped.unique().tolist()) == {0, 10}


def test_loss_passes_labels_to_model(s):
    seen = {}
    def model(x, t, y):
        seen["y"] = y
        return torch.zeros_like(x)
    y = torch.tensor([1, 2, 3])
    diffusion_loss(model, torch.randn(3, 1, 4, 4), s, y=y)
    assert torch.equal(seen["y"], y)
    diffusion_loss(model, torch.randn(3, 1, 4, 4), s, y=y, p_uncond=1.0, null_label=10)
    assert (seen["y"] == 10).all()


def test_loss_bad_input(s):
    x0, model = torch.randn(2, 1, 4, 4), lambda x, t: x
    with pytest.raises(ValueError, match=r"target must be one of \('eps', 'x0', 'v'\); got 'noise'"):
        diffusion_loss(model, x0, s, target="noise")
    with pytest.raises(ValueError, match=r"weighting must be one of \(None, 'p2', 'min_snr'\); got 'snr'"):
        diffusion_loss(model, x0, s, weighting="snr")
    with pytest.raises(ValueError, match=r"p_uncond must be in \[0, 1\]; got 1.5"):
        diffusion_loss(model, x0, s, p_uncond=1.5)
    with pytest.raises(ValueError, match="p_uncond > 0 needs labels y"):
        diffusion_loss(model, x0, s, p_uncond=0.1)
    with pytest.raises(ValueError, match=r"y must be a LongTensor of shape \(2,\)"):
        diffusion_loss(model, x0, s, y=torch.tensor([1]))


def test_weightings_are_finite_at_zero_snr():
    """A zero-terminal-SNR schedule has SNR = 0 at its last step: min-SNR's min(SNR, γ)/SNR is 1 there, not 0/0."""
    from minidiff.losses import loss_weight
    snr = torch.tensor([0.0, 0.5, 5.0, 50.0])
    for weighting in ("p2", "min_snr"):
        for target in ("eps", "x0", "v"):
            assert torch.isfinite(loss_weight(weighting, target, snr)).all(), (weighting, target)
    torch.testing.assert_close(loss_weight("min_snr", "eps", snr), torch.tensor([1.0, 1.0, 1.0, 0.1]))
    z = md.NoiseSchedule.linear(100).rescaled_zero_terminal_snr()
    model = lambda x, t: torch.zeros_like(x)
    loss = md.diffusion_loss(model, torch.randn(4, 1, 4, 4), z, target="v", weighting="min_snr",
                             t=torch.tensor([99, 99, 0, 50]))
    assert torch.isfinite(loss)


# -- the variational bound (Ho et al. 2020, eq. 5, 8-12) and the SNR weighting (notebook 05) -----------------


def test_gaussian_kl_matches_torch_and_is_the_scaled_squared_difference_for_equal_variances():
    g = torch.Generator().manual_seed(0)
    mq, mp = torch.randn(2, 50, generator=g, dtype=torch.float64)
    vq, vp = torch.rand(2, 50, generator=g, dtype=torch.float64) + 0.1
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(mq, vq.sqrt()),
                                                 torch.distributions.Normal(mp, vp.sqrt()))
    torch.testing.assert_close(gaussian_kl(mq, vq, mp, vp), expected)
    torch.testing.assert_close(gaussian_kl(mq, vp, mp, vp), (mq - mp) ** 2 / (2 * vp))      # eq. 8
    assert torch.all(gaussian_kl(mq, vq, mq, vq) == 0)
    with pytest.raises(ValueError, match="var_q and var_p must be > 0"):
        gaussian_kl(mq, torch.zeros(50, dtype=torch.float64), mp, vp)


def _means(s, t, x0, eps, eps_hat):
    """(μ̃_t(x_t, x_0) from md.q_posterior, μ_θ(x_t, ε̂) in the ε form of eq. 11, x_t) at positions t."""
    x_t = md.q_sample(x0, t, s, eps)
    mu_tilde, _ = md.q_posterior(x0, x_t, t, s)
    beta, alpha, abar = (md.extract(a, t, x_t) for a in (s.betas, s.alphas, s.alphas_cumprod))
    mu_theta = (x_t - beta / (1 - abar).sqrt() * eps_hat) / alpha.sqrt()
    return mu_tilde, mu_theta, (beta, alpha, abar)


def test_the_posterior_mean_minus_the_models_is_the_noise_error_scaled():
    """μ̃_t − μ_θ = β_t / (√α_t √(1 − ᾱ_t)) · (ε̂ − ε), for any ε̂ (eq. 10 minus eq. 11)."""
    s = md.NoiseSchedule.linear(1000)
    x0, eps, eps_hat = torch.randn(3, 4, 1, 5, 5, dtype=torch.float64).unbind(0)
    t = torch.tensor([1, 10, 500, 999])
    mu_tilde, mu_theta, (beta, alpha, abar) = _means(s, t, x0, eps, eps_hat)
    torch.testing.assert_close(mu_tilde - mu_theta, beta / (alpha.sqrt() * (1 - abar).sqrt()) * (eps_hat - eps))


@pytest.mark.parametrize("variance", ["beta", "posterior"])
def test_each_bound_term_is_the_vlb_weighted_noise_error(variance):
    """L_{t−1} = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)) = C + λ_t ‖ε − ε̂‖² (eq. 12), C free of θ."""
    s = md.NoiseSchedule.linear(1000)
    sigma2 = s.betas if variance == "beta" else s.posterior_variance
    x0, eps, eps_hat = torch.randn(3, 4, 1, 5, 5, dtype=torch.float64).unbind(0)
    t = torch.tensor([1, 10, 500, 999])                 # positions ≥ 1: the terms L_1 … L_{T−1}
    mu_tilde, mu_theta, _ = _means(s, t, x0, eps, eps_hat)
    var_q, var_p = md.extract(s.posterior_variance, t, x0), md.extract(sigma2, t, x0)
    kl = lambda mu_p: gaussian_kl(mu_tilde, var_q, mu_p, var_p).flatten(1).sum(1)
    weighted = vlb_weight(s, sigma2)[t] * (eps - eps_hat).pow(2).flatten(1).sum(1)
    torch.testing.assert_close(kl(mu_theta) - kl(mu_tilde), weighted)


def test_vlb_weight_on_the_linear_schedule():
    s = md.NoiseSchedule.linear(1000)
    w = vlb_weight(s)
    # σ_t² = β_t: λ_t = β_t / (2 α_t (1 − ᾱ_t)); at step 1, 1 − ᾱ_1 = β_1, so λ_1 = 1 / (2 α_1)
    torch.testing.assert_close(w, s.betas / (2 * s.alphas * (1 - s.alphas_cumprod)))
    torch.testing.assert_close(w[0], 1 / (2 * s.alphas[0]))
    assert w[0] / w.min() > 50 and w[-1] > w.min()        # largest at small t (what L_simple drops, §3.4)
    with pytest.raises(ValueError, match=r"sigma2 must be a tensor of shape \(1000,\)"):
        vlb_weight(s, s.betas[:10])


def test_the_noise_error_is_snr_times_the_x0_error():
    """‖ε − ε̂‖² = SNR(t) · ‖x₀ − x̂₀‖², x̂₀ = (x_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t: the ε-MSE weights x̂₀'s error by SNR."""
    s = md.NoiseSchedule.linear(1000)
    x0, eps, eps_hat = torch.randn(3, 5, 1, 6, 6, dtype=torch.float64).unbind(0)
    t = torch.tensor([0, 1, 250, 900, 999])
    x0_hat = md.predict_x0_from_eps(md.q_sample(x0, t, s, eps), t, eps_hat, s)
    err = lambda a, b: (a - b).pow(2).flatten(1).sum(1)
    torch.testing.assert_close(err(eps, eps_hat), s.snr(t) * err(x0, x0_hat))
    assert 3e-5 < s.snr(999) < 5e-5                      # step T of the linear schedule: x̂₀'s error barely counts


def test_a_label_past_the_models_range_is_named(s):                                                  # issue 28, case 30
    model = md.UNet(md.UNetConfig(image_size=8, base_channels=8, channel_mults=(1, 2), blocks_per_level=1,
                                  attention_resolutions=(), num_classes=10, head_dim=8))
    with pytest.raises(ValueError,
                       match=r"y must hold labels in \[0, 9\] \(or 10, the null label\); got values from 11"):
        diffusion_loss(model, torch.randn(1, 1, 8, 8), s, y=torch.tensor([11]))
