"""Issue 30's review of notebooks 01–08: every identity the fixed text states, and every exercise check
accepting each algebraically equal form a notebook teaches while naming the notebooks' own pitfalls."""
import math

import pytest
import torch

import minidiff as md
from minidiff.course import exercises as ex
from minidiff.course.exercises import ExerciseError
from minidiff.guidance import ClassifierFree, Projected, cfg_mix, projected_mix


def coef(table, t, x, dtype=None):
    """table[t] shaped (B, 1, 1, 1), in ``dtype`` (x's by default), as a learner writes it."""
    return table[t].to(dtype or x.dtype).reshape(-1, *(1,) * (x.ndim - 1))


def mistake_named(check, fn, fragment):
    """``check(fn)`` fails, and its message names the common mistake containing ``fragment``."""
    with pytest.raises(ExerciseError) as excinfo:
        check(fn)
    message = str(excinfo.value)
    assert "This looks like a common mistake" in message and fragment in message, message
    return message


# -- item 11: posterior_mean accepts every form notebook 02 teaches ---------------------------------
def posterior_x0_form(x0, x_t, t, s):
    abar, prev = coef(s.alphas_cumprod, t, x0), coef(s.alphas_cumprod_prev, t, x0)
    beta, alpha = coef(s.betas, t, x0), coef(s.alphas, t, x0)
    return prev.sqrt() * beta / (1 - abar) * x0 + alpha.sqrt() * (1 - prev) / (1 - abar) * x_t


def posterior_one_division(x0, x_t, t, s):
    """The solution's form: both terms over one denominator."""
    abar, prev = coef(s.alphas_cumprod, t, x0), coef(s.alphas_cumprod_prev, t, x0)
    beta, alpha = coef(s.betas, t, x0), coef(s.alphas, t, x0)
    return (prev.sqrt() * beta * x0 + alpha.sqrt() * (1 - prev) * x_t) / (1 - abar)


def posterior_eps_form(x0, x_t, t, s):
    """Notebook 02's ε-form, μ̃ = (x_t − β_t/√(1 − ᾱ_t)·ε)/√α_t, with ε recovered from x_0."""
    abar, beta, alpha = coef(s.alphas_cumprod, t, x0), coef(s.betas, t, x0), coef(s.alphas, t, x0)
    eps = (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()
    return (x_t - beta / (1 - abar).sqrt() * eps) / alpha.sqrt()


def posterior_precision_form(x0, x_t, t, s):
    """Completing the square's step 4: μ̃ = (√α_t/β_t·x_t + √ᾱ_{t−1}/(1 − ᾱ_{t−1})·x_0) / (1/β̃_t); at position 0
    (ᾱ_0 = 1) the precision is infinite and μ̃_1 = x_0."""
    prev, beta, alpha = coef(s.alphas_cumprod_prev, t, x0), coef(s.betas, t, x0), coef(s.alphas, t, x0)
    precision = alpha / beta + 1 / (1 - prev)
    mu = (alpha.sqrt() / beta * x_t + prev.sqrt() / (1 - prev) * x0) / precision
    return torch.where(prev == 1, x0, mu)


def posterior_float32_tables(x0, x_t, t, s):
    """The x_0 form with the float64 tables cast to float32 before any arithmetic."""
    f = lambda table: coef(table, t, x0, torch.float32)
    abar, prev, beta, alpha = f(s.alphas_cumprod), f(s.alphas_cumprod_prev), f(s.betas), f(s.alphas)
    return (prev.sqrt() * beta * x0 + alpha.sqrt() * (1 - prev) * x_t) / (1 - abar)


@pytest.mark.parametrize("form", [posterior_x0_form, posterior_one_division, posterior_eps_form,
                                  posterior_precision_form, posterior_float32_tables])
@pytest.mark.parametrize("hidden", [False, True])
def test_posterior_mean_accepts_every_equal_form(form, hidden, capsys):
    assert ex.check_posterior_mean(form, hidden=hidden) is (None if hidden else form)
    assert "✓ posterior_mean" in capsys.readouterr().out


def test_posterior_mean_cases_draw_x_t_from_q_of_x_t_given_x0():
    for case in ex.nb02_closed_form._posterior_cases():
        x0, x_t, t, s = case.args
        eps = (x_t - coef(s.sqrt_alphas_cumprod, t, x0) * x0) / coef(s.sqrt_one_minus_alphas_cumprod, t, x0)
        assert eps.abs().max() < 6                  # a standard normal draw, not a huge ε


# -- items 1 and 12: notebook 07's checks name its pitfalls ------------------------------------------
def _guided_parts(model, x_t, t, y, null_label):
    out = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null_label)]))
    return out.chunk(2)


def test_guided_prediction_names_ho_and_salimans_form_as_w_shifted_by_one():
    def paper_form(model, x_t, t, y, null_label, w):                # (1 + w)ε_c − wε_u, Ho & Salimans eq. 6
        cond, uncond = _guided_parts(model, x_t, t, y, null_label)
        return (1 + w) * cond - w * uncond
    message = mistake_named(ex.check_guided_prediction, paper_form, "Ho & Salimans' own form (their eq. 6)")
    assert "w − 1" in message

    def paper_form_shifted(model, x_t, t, y, null_label, w):        # the same with w − 1: right
        cond, uncond = _guided_parts(model, x_t, t, y, null_label)
        return w * cond - (w - 1) * uncond
    assert ex.check_guided_prediction(paper_form_shifted) is paper_form_shifted


def test_guided_prediction_names_null_label_zero():
    def null_zero(model, x_t, t, y, null_label, w):
        cond, uncond = _guided_parts(model, x_t, t, y, 0)
        return uncond + w * (cond - uncond)
    mistake_named(ex.check_guided_prediction, null_zero, "label 0, which is the digit 0")


def test_rescaled_guidance_names_per_channel_std_and_accepts_equal_forms():
    def per_channel(cond, uncond, w, phi):
        x = uncond + w * (cond - uncond)
        sd = lambda z: z.std(dim=(2, 3), keepdim=True)
        return phi * x * sd(cond) / sd(x) + (1 - phi) * x
    mistake_named(ex.check_rescaled_guidance, per_channel, "per channel")

    def einops_like(cond, uncond, w, phi):                          # std over dims (1, 2, 3), then a lerp
        x = cond + (w - 1) * (cond - uncond)
        rescaled = x * cond.std(dim=(1, 2, 3), keepdim=True) / x.std(dim=(1, 2, 3), keepdim=True)
        return torch.lerp(x, rescaled, phi)
    assert ex.check_rescaled_guidance(einops_like) is einops_like


# -- item 6: adaptive projected guidance (Sadat et al. 2024) -----------------------------------------
def _pair(shape=(3, 2, 5, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def test_projected_mix_with_parallel_weight_one_and_no_threshold_is_plain_cfg():
    cond, uncond = _pair()
    for w in (0.0, 1.0, 3.0, 8.0):
        torch.testing.assert_close(projected_mix(cond, uncond, w, eta=1.0), cfg_mix(cond, uncond, w))


def test_projected_mix_with_parallel_weight_zero_moves_orthogonally_to_the_conditional_prediction():
    cond, uncond = _pair()
    change = (projected_mix(cond, uncond, 5.0, eta=0.0) - cond).flatten(1).double()
    cosine = (change * cond.flatten(1).double()).sum(1) / (change.norm(dim=1) * cond.flatten(1).double().norm(dim=1))
    assert cosine.abs().max() < 1e-6
    assert change.norm(dim=1).min() > 0.1                           # it does move


def test_projected_mix_splits_the_update_into_its_two_parts():
    cond, uncond = _pair()
    delta = (cond - uncond).flatten(1)
    unit = cond.flatten(1) / cond.flatten(1).norm(dim=1, keepdim=True)
    parallel = (delta * unit).sum(1, keepdim=True) * unit
    expected = cond + 2.0 * ((delta - parallel) + 0.25 * parallel).view_as(cond)
    torch.testing.assert_close(projected_mix(cond, uncond, 3.0, eta=0.25), expected, atol=1e-5, rtol=1e-5)


def test_projected_mix_norm_threshold_shortens_only_long_updates():
    cond, uncond = _pair()
    norms = (cond - uncond).flatten(1).norm(dim=1)
    r = float(norms.median())
    change = (projected_mix(cond, uncond, 2.0, eta=1.0, norm_threshold=r) - cond).flatten(1).norm(dim=1)
    torch.testing.assert_close(change, norms.clamp(max=r), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("target", ["eps", "x0", "v"])
def test_projected_guidance_with_cfg_settings_is_classifier_free(target):
    s = md.NoiseSchedule.linear(1000)
    cond, uncond = _pair((2, 1, 6, 6))
    x_t = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(3))
    apg = Projected(4.0, s, target, eta=1.0)
    for t in (900, 500, 10):
        torch.testing.assert_close(apg(cond, uncond, t, x_t), ClassifierFree(4.0)(cond, uncond, t, x_t),
                                   atol=1e-4, rtol=1e-4)


def test_projected_guidance_momentum_averages_within_a_run_and_restarts_with_the_next():
    s = md.NoiseSchedule.linear(1000)
    apg = Projected(3.0, s, "eps", eta=0.0, momentum=-0.5)
    x_t = torch.randn(2, 1, 4, 4)
    steps = [(t, *_pair((2, 1, 4, 4), seed=t)) for t in (800, 400, 100)]
    first = [apg(c, u, t, x_t) for t, c, u in steps]
    second = [apg(c, u, t, x_t) for t, c, u in steps]              # position grew: a new run
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b)
    fresh = Projected(3.0, s, "eps", eta=0.0)                       # no momentum: differs after the first step
    assert torch.equal(fresh(steps[0][1], steps[0][2], 800, x_t), first[0])
    assert not torch.allclose(fresh(steps[1][1], steps[1][2], 400, x_t), first[1])


def test_projected_guidance_rejects_bad_settings():
    s = md.NoiseSchedule.linear(10)
    with pytest.raises(ValueError, match="norm_threshold must be positive"):
        Projected(3.0, s, "eps", norm_threshold=0.0)
    with pytest.raises(ValueError, match="eta must be a finite number"):
        Projected(3.0, s, "eps", eta=float("nan"))


# -- item 8: notebook 03's numbers --------------------------------------------------------------------
def test_cosine_schedule_numbers_notebook_03_quotes():
    s = md.NoiseSchedule.cosine(1000)
    T = s.num_steps
    assert round(s.betas[T - 9 - 1].item(), 3) == 0.190           # β at t = T − 9 (position T − 10): 0.19
    assert round(s.betas[T - 10 - 1].item(), 2) == 0.17           # 0.17 is t = T − 10
    assert round(s.betas[T - 1 - 1].item(), 2) == 0.75 and round(s.betas[T - 1].item(), 3) == 0.999
    leak = 256 * 256 * 3 * s.snr(T - 1).item()                     # D·SNR(T) at 256×256 RGB
    assert f"{leak:.3g}" == "0.000478" and round(leak * 1e4, 1) == 4.8
    linear_digits = 28 * 28 * md.NoiseSchedule.linear(1000).snr(T - 1).item()
    assert f"{linear_digits:.3g}" == "0.0316" and leak < linear_digits


# -- item 12: notebook 01's pitfalls are named ---------------------------------------------------------
def _step(x_prev, t, s, noise, x_coef, noise_coef):
    return x_coef(coef(s.alphas, t, x_prev)) * x_prev + noise_coef(coef(s.betas, t, x_prev)) * noise


@pytest.mark.parametrize("wrong, fragment", [
    (lambda x, t, s, e: _step(x, t, s, e, torch.sqrt, lambda b: b), "scaled by β, a variance"),
    (lambda x, t, s, e: _step(x, t, s, e, lambda a: a, torch.sqrt), "not by √(1 − β) = √α"),
    (lambda x, t, s, e: x + coef(s.betas, t, x).sqrt() * e, "the shrink is missing"),
], ids=["beta_times_eps", "one_minus_beta_times_x", "no_shrink"])
def test_q_step_names_notebook_01s_pitfalls(wrong, fragment):
    mistake_named(ex.check_q_step, wrong, fragment)


def test_forward_chain_maps_a_lookup_crash_to_the_off_by_one_mistake():
    def kept_by_position(x0, s, steps, noise):              # kept[i] after the step at position i: no kept[max]
        kept, x = {}, x0
        for i in range(max(steps)):
            x = md.q_step(x, i, s, noise[i])
            kept[i] = x
        return torch.stack([kept[k] for k in steps])
    with pytest.raises(ExerciseError) as excinfo:
        ex.check_forward_chain(kept_by_position)
    message = str(excinfo.value)
    assert "raised an error on case 1 of 5" in message and "KeyError: 5" in message
    assert "This looks like a common mistake: an off-by-one between steps and positions" in message
    assert isinstance(excinfo.value.__cause__, KeyError)

    def noise_past_the_end(x0, s, steps, noise):            # T + 1 steps: noise[T] does not exist
        x, kept = x0, {0: x0}
        for i in range(1, s.num_steps + 1):
            x = md.q_step(x, i - 1, s, noise[i])
            kept[i] = x
        return torch.stack([kept[k] for k in steps])
    with pytest.raises(ExerciseError, match="(?s)IndexError.*off-by-one between steps and positions"):
        ex.check_forward_chain(noise_past_the_end)


def test_forward_chain_does_not_blame_an_unrelated_key_error_on_the_off_by_one():
    def crashes(x0, s, steps, noise):
        raise KeyError("no such table")
    with pytest.raises(ExerciseError) as excinfo:
        ex.check_forward_chain(crashes)
    assert "off-by-one" not in str(excinfo.value) and "KeyError: 'no such table'" in str(excinfo.value)


# -- item 12: notebook 03's pitfalls are named ---------------------------------------------------------
def test_cosine_schedule_names_u_off_by_one():
    def u_from_t_minus_one(num_steps, s=0.008, max_beta=0.999):
        u = torch.arange(num_steps, dtype=torch.float64) / num_steps            # u = (t − 1)/T for t = 1 … T
        f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
        abar = f / f[0]
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        return (1 - abar / abar_prev).clamp(max=max_beta)
    assert u_from_t_minus_one(10)[0] == 0                                       # the pitfall: β_1 = 0
    mistake_named(ex.check_cosine_schedule, u_from_t_minus_one, "u is off by one")


def test_zero_terminal_snr_names_setting_the_last_beta_to_one():
    def last_beta_one(betas):
        out = betas.clone()
        out[-1] = 1.0
        return out
    mistake_named(ex.check_zero_terminal_snr, last_beta_one, "you set β_T = 1")


# -- items 7 and 9: notebook 02's identities -------------------------------------------------------------
def posterior_weighted_form(x0, x_t, t, s):
    """μ̃ = λ·√ᾱ_{t−1}·x0 + (1 − λ)·x_t/√α_t with λ = β_t/(1 − ᾱ_t) (notebook 02's weighted average)."""
    abar, prev = coef(s.alphas_cumprod, t, x0), coef(s.alphas_cumprod_prev, t, x0)
    beta, alpha = coef(s.betas, t, x0), coef(s.alphas, t, x0)
    lam = beta / (1 - abar)
    return lam * prev.sqrt() * x0 + (1 - lam) * x_t / alpha.sqrt()


@pytest.mark.parametrize("hidden", [False, True])
def test_posterior_mean_accepts_the_weighted_average_form(hidden):
    assert (ex.check_posterior_mean(posterior_weighted_form, hidden=hidden)
            is (None if hidden else posterior_weighted_form))


@pytest.mark.parametrize("kind", ["linear", "cosine", "sigmoid"])
def test_posterior_mean_is_a_precision_weighted_average_of_two_guesses(kind):
    s = md.make_schedule(kind, 1000)
    beta, alpha, abar, prev = s.betas[1:], s.alphas[1:], s.alphas_cumprod[1:], s.alphas_cumprod_prev[1:]
    lam = beta / (1 - abar)
    precision_x0, precision_xt = 1 / (1 - prev), alpha / beta
    torch.testing.assert_close(lam, precision_x0 / (precision_x0 + precision_xt), rtol=1e-10, atol=0)
    x0, x_t = torch.randn(2, len(beta), dtype=torch.float64)
    mean, _ = md.q_posterior(x0[:, None], x_t[:, None], torch.arange(1, s.num_steps), s)
    torch.testing.assert_close(mean[:, 0], lam * prev.sqrt() * x0 + (1 - lam) * x_t / alpha.sqrt(),
                               rtol=1e-10, atol=1e-12)
    c0, ct = prev.sqrt() * beta / (1 - abar), alpha.sqrt() * (1 - prev) / (1 - abar)
    assert ((c0 + ct - 1).abs() > 1e-3).any()                       # the coefficients themselves do not sum to 1


def test_an_eps_error_reaches_x0_divided_by_snr():
    s = md.NoiseSchedule.linear(1000)
    x0, eps, err = torch.randn(3, 4, 1, 8, 8, dtype=torch.float64)
    i = torch.tensor([0, 299, 699, 999])
    x_t = md.q_sample(x0, i, s, eps)
    x0_hat = md.predict_x0_from_eps(x_t, i, eps + err, s)
    ratio = (x0_hat - x0).flatten(1).pow(2).sum(1) / err.flatten(1).pow(2).sum(1)
    torch.testing.assert_close(ratio, 1 / s.snr(i), rtol=1e-9, atol=0)
    assert 150 < (1 / s.snr(999)).sqrt().item() < 165                  # "about 160" at t = 1000 (157.4)


# -- item 4: how an ε̂ error enters DDIM's next point (notebooks 05 and 06) --------------------------------
def _ddim_error_factor(s, t, t_next):
    abar = s.alphas_cumprod
    return ((1 - abar[t_next]).sqrt() - abar[t_next].sqrt() * (1 - abar[t]).sqrt() / abar[t].sqrt()).item()


def test_an_eps_error_enters_the_ddim_step_times_the_bracket():
    s = md.NoiseSchedule.linear(1000)
    x_t, eps, err = torch.randn(3, 2, 1, 6, 6, dtype=torch.float64)
    for t, t_next in [(999, 979), (999, 899), (999, 799), (500, 499)]:
        moved = md.ddim_step(x_t, eps + err, t, t_next, s) - md.ddim_step(x_t, eps, t, t_next, s)
        torch.testing.assert_close(moved, _ddim_error_factor(s, t, t_next) * err, rtol=1e-9, atol=1e-12)


def test_the_factors_notebooks_05_and_06_quote():
    s = md.NoiseSchedule.linear(1000)
    quoted = {1000: "-0.01", 50: "-0.22", 10: "-1.6", 5: "-5.2"}
    for steps, text in quoted.items():
        t, t_next = md.samplers.ddim_timesteps(1000, steps)[:2]
        assert t == 999                                              # trailing spacing starts at t = T
        factor = _ddim_error_factor(s, t, t_next)
        assert f"{factor:.{len(text.split('.')[1])}f}" == text, (steps, factor)


# -- item 2: the autoencoder loss's normalisation against LDM's ------------------------------------------
class _FixedAutoencoder(torch.nn.Module):
    """Returns a fixed reconstruction and posterior: enough to evaluate AutoencoderObjective's loss."""
    def __init__(self, reconstruction, mean, logvar):
        super().__init__()
        self.out = (reconstruction, mean, logvar)

    def forward(self, x):
        return self.out


def test_reconstruction_loss_is_a_pixel_mean_plus_beta_times_a_per_image_kl_and_ldms_balance_is_8e_11():
    g = torch.Generator().manual_seed(0)
    B, C, H, W = 2, 3, 64, 64
    x, x_hat = torch.rand(2, B, C, H, W, generator=g) * 2 - 1
    mean, logvar = torch.randn(2, B, 4, 16, 16, generator=g) * 0.5
    beta = 1e-6
    loss, logs = md.objectives.AutoencoderObjective(md.objectives.ReconstructionConfig("l1", beta))(
        _FixedAutoencoder(x_hat, mean, logvar), (x,))
    kl_per_image = (0.5 * (mean ** 2 + logvar.exp() - 1 - logvar)).flatten(1).sum(1)
    ours = (x_hat - x).abs().mean() + beta * kl_per_image.mean()
    torch.testing.assert_close(loss, ours, rtol=1e-5, atol=1e-7)
    # LDM: reconstruction summed per image, KL weight 1e-6. Ours × CHW is LDM's loss with KL weight CHW·β.
    D = C * H * W
    ldm = lambda kl_weight: (x_hat - x).abs().flatten(1).sum(1).mean() + kl_weight * kl_per_image.mean()
    torch.testing.assert_close(D * loss, ldm(D * beta), rtol=1e-5, atol=1e-4)
    assert D == 12_288 and round(1e-6 / D * 1e11, 1) == 8.1                # SD's balance here: β ≈ 8·10⁻¹¹


# -- item 12: notebook 08's pitfalls are named ------------------------------------------------------------
def test_reparameterise_names_self_drawn_noise():
    def own_noise(mean, logvar, noise):
        return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
    with pytest.raises(ExerciseError, match="(?s)not right yet.*wrong values.*common mistake: you drew your own noise"):
        ex.check_reparameterise(own_noise)

    def given_noise(mean, logvar, noise):
        return mean + (0.5 * logvar).exp() * noise
    assert ex.check_reparameterise(given_noise) is given_noise


# -- item 14 (part): notebook 03's p(log-SNR) of the cosine schedule ----------------------------------------
@pytest.mark.parametrize("offset, tolerance", [(0.0, 1e-5), (0.008, 0.01)])
def test_cosine_schedule_spends_its_steps_as_sech_over_two_pi(offset, tolerance):
    T = 1000
    lam = md.NoiseSchedule.cosine(T, s=offset).log_snr
    density = 1 / (T * (lam[:-1] - lam[1:]))                       # p(λ) = (1/T)/|dλ/dt|, t uniform
    midpoints = (lam[:-1] + lam[1:]) / 2
    formula = 1 / (2 * math.pi * torch.cosh(midpoints / 2))        # sech(λ/2)/(2π)
    middle = slice(100, 900)                                       # steps t = 101 … 900: away from the clip
    assert ((density[middle] / formula[middle]) - 1).abs().max() < tolerance


# -- item 14 (part): notebook 02's ELBO terms ---------------------------------------------------------------
@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_prior_term_l_t_closed_form(kind):
    s = md.make_schedule(kind, 1000)
    abar_T = s.alphas_cumprod[-1]
    x0 = torch.rand(2, 1, 8, 8, dtype=torch.float64) * 2 - 1
    closed = 0.5 * (abar_T * x0 ** 2 + (1 - abar_T) - 1 - torch.log(1 - abar_T))
    q_T = torch.distributions.Normal(abar_T.sqrt() * x0, (1 - abar_T).sqrt().expand_as(x0))
    prior = torch.distributions.Normal(torch.zeros_like(x0), torch.ones_like(x0))
    torch.testing.assert_close(closed, torch.distributions.kl_divergence(q_T, prior), rtol=1e-6, atol=1e-15)


def test_a_kl_term_with_a_fixed_variance_compares_only_the_means():
    s = md.NoiseSchedule.linear(1000)
    i = torch.tensor([1, 300, 999])
    x0, x_t, mu_theta = torch.randn(3, 3, 16, dtype=torch.float64)
    mu, var = md.q_posterior(x0, x_t, i, s)
    sigma2 = var.expand_as(mu)                                       # p_θ's variance fixed to β̃_t
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(mu, sigma2.sqrt()),
                                           torch.distributions.Normal(mu_theta, sigma2.sqrt())).sum(1)
    torch.testing.assert_close(kl, ((mu - mu_theta) ** 2 / (2 * sigma2)).sum(1), rtol=1e-10, atol=0)
