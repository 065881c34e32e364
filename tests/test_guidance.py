"""guidance.py: the classifier-free mix and its identities, label dropout, the null label, guidance as
a function (a variant is a few lines, not a new sampler argument), and bad scales."""
import math

import pytest
import torch

import minidiff as md
from minidiff.guidance import (
    ClassifierFree,
    Interval,
    Rescaled,
    Thresholded,
    as_guidance,
    cfg_mix,
    drop_labels,
    guided_output,
    null_label,
    per_image_std,
)


def tiny_unet(num_classes=3) -> md.UNet:
    torch.manual_seed(0)
    model = md.UNet(md.UNetConfig(image_size=8, base_channels=8, channel_mults=(1, 2), blocks_per_level=1,
                                  attention_resolutions=(), dropout=0.0, num_classes=num_classes)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_the_mix_is_unconditional_at_zero_conditional_at_one_and_linear_in_w():
    cond, uncond = torch.randn(2, 4, 1, 3, 3, dtype=torch.float64).unbind(0)
    torch.testing.assert_close(cfg_mix(cond, uncond, 0.0), uncond)
    torch.testing.assert_close(cfg_mix(cond, uncond, 1.0), cond)
    # ε̃(w) = ε_u + w (ε_c − ε_u): equal steps in w are equal steps in the output
    a, b, c = (cfg_mix(cond, uncond, w) for w in (1.0, 2.0, 3.0))
    torch.testing.assert_close(b - a, c - b)
    torch.testing.assert_close(cfg_mix(cond, uncond, -1.0), 2 * uncond - cond)      # anti-guidance


def test_the_mix_commutes_with_the_target_conversions():
    """Mixing v-outputs and then converting equals converting and then mixing ε (the conversions are affine)."""
    s = md.NoiseSchedule.linear(100)
    x_t, v_c, v_u = torch.randn(3, 2, 1, 4, 4, dtype=torch.float64).unbind(0)
    eps = lambda v: md.predict_eps_from_v(x_t, 40, v, s)
    torch.testing.assert_close(eps(cfg_mix(v_c, v_u, 2.5)), cfg_mix(eps(v_c), eps(v_u), 2.5))


def test_guided_output_is_one_batched_pass_over_conditional_and_null_labels():
    model = tiny_unet()
    calls = []
    model.register_forward_hook(lambda m, args, out: calls.append(args[2].tolist()))
    x, y = torch.randn(2, 1, 8, 8), torch.tensor([0, 2])
    with torch.no_grad():
        out = guided_output(model, x, 10, y, ClassifierFree(3.0))
        t = torch.full((2,), 10)
        cond, uncond = model(x, t, y), model(x, t, torch.full_like(y, 3))
    assert calls[0] == [0, 2, 3, 3]                       # one call: the labels, then the null label twice
    torch.testing.assert_close(out, uncond + 3.0 * (cond - uncond), atol=1e-5, rtol=1e-5)


def test_a_guidance_function_is_all_a_variant_needs():
    """Guidance on an interval of t (Kynkäänniemi et al. 2024): a few lines, passed where a scale goes."""
    s = md.NoiseSchedule.linear(50)
    model = tiny_unet()
    seen = []

    def interval(cond, uncond, t, x_t, low=10, high=30, w=4.0):
        seen.append(t)
        return cfg_mix(cond, uncond, w if low <= t <= high else 1.0)

    y = torch.tensor([1, 2])
    with torch.no_grad():
        guided = md.ddim_sample(model, s, (2, 1, 8, 8), steps=5, y=y, guidance_scale=interval,
                                generator=torch.Generator().manual_seed(0))
        conditional = md.ddim_sample(model, s, (2, 1, 8, 8), steps=5, y=y, generator=torch.Generator().manual_seed(0))
    assert seen == md.samplers.ddim_timesteps(50, 5)
    assert not torch.allclose(guided, conditional)


def test_label_dropout_rate_and_null_label():
    y = torch.randint(0, 10, (20_000,), generator=torch.Generator().manual_seed(0))
    dropped = drop_labels(y, 0.1, 10, generator=torch.Generator().manual_seed(1))
    is_null = dropped == 10
    assert abs(is_null.float().mean().item() - 0.1) < 0.01
    assert torch.equal(dropped[~is_null], y[~is_null])
    assert torch.equal(drop_labels(y, 0.0, 10), y) and (drop_labels(y, 1.0, 10) == 10).all()
    assert null_label(tiny_unet(num_classes=7)) == 7
    with pytest.raises(ValueError, match="unconditional"):
        null_label(tiny_unet(num_classes=None))
    with pytest.raises(ValueError, match="p_uncond"):
        drop_labels(y, 1.5, 10)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), "2", True])
def test_a_scale_that_would_make_every_image_nan_is_refused(bad):
    with pytest.raises(ValueError, match="guidance_scale must be a finite number"):
        as_guidance(bad)
    s = md.NoiseSchedule.linear(20)
    with pytest.raises(ValueError, match="guidance_scale must be a finite number"):
        md.ddim_sample(tiny_unet(), s, (1, 1, 8, 8), steps=2, y=torch.tensor([0]), guidance_scale=bad)


def test_as_guidance_turns_a_scale_into_classifier_free():
    assert as_guidance(None) is None
    assert as_guidance(2) == ClassifierFree(2.0) and math.isclose(as_guidance(0.5).scale, 0.5)
    fn = lambda c, u, t, x_t: c
    assert as_guidance(fn) is fn


# -- the variants notebook 07 measures ---------------------------------------------------------------
def test_rescaled_brings_the_guided_std_back_to_the_conditional_one():
    g = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(4, 1, 8, 8, generator=g), 0.5 * torch.randn(4, 1, 8, 8, generator=g)
    x_t = torch.zeros(4, 1, 8, 8)
    plain = cfg_mix(cond, uncond, 5.0)
    assert (per_image_std(plain) > 1.5 * per_image_std(cond)).all()                   # guidance inflates σ
    full = Rescaled(5.0, phi=1.0)(cond, uncond, 10, x_t)
    torch.testing.assert_close(per_image_std(full), per_image_std(cond))               # eq. 16
    torch.testing.assert_close(Rescaled(5.0, phi=0.0)(cond, uncond, 10, x_t), plain)    # φ = 0: plain CFG
    mixed = Rescaled(5.0, phi=0.7)(cond, uncond, 10, x_t)
    torch.testing.assert_close(mixed, 0.7 * full + 0.3 * plain)                         # eq. 17
    with pytest.raises(ValueError, match="phi must be in"):
        Rescaled(2.0, phi=1.5)


def test_interval_guides_only_inside_it():
    cond, uncond, x_t = torch.randn(3, 2, 1, 4, 4).unbind(0)
    guide = Interval(4.0, t_low=100, t_high=600)
    torch.testing.assert_close(guide(cond, uncond, 300, x_t), cfg_mix(cond, uncond, 4.0))
    for t in (0, 99, 601, 999):
        torch.testing.assert_close(guide(cond, uncond, t, x_t), cond)
    with pytest.raises(ValueError, match="t_low <= t_high"):
        Interval(2.0, 600, 100)


@pytest.mark.parametrize("target", ["eps", "x0", "v"])
def test_thresholded_clips_the_guided_x0_and_answers_in_the_models_target(target):
    s = md.NoiseSchedule.linear(1000)
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64)
    cond, uncond = (3 * torch.randn(2, 3, 1, 8, 8, generator=g, dtype=torch.float64)).unbind(0)
    t = 400
    out = Thresholded(4.0, s, target, percentile=0.9)(cond, uncond, t, x_t)
    eps, x0 = md.eps_and_x0(out, x_t, t, s, target)
    assert x0.abs().max() <= 1 + 1e-6                                  # back in the data range (round-off aside)
    # x_t is unchanged: the thresholded pair still satisfies x_t = √ᾱ x̂_0 + √(1 − ᾱ) ε̂
    torch.testing.assert_close(md.q_sample(x0, t, s, eps), x_t)
    # where the guided x̂_0 is already in [-1, 1], nothing changes (q = max(q, 1) = 1)
    x0_in, eps = 0.9 * torch.tanh(torch.randn_like(x_t)), torch.randn_like(x_t)
    x_t = md.q_sample(x0_in, t, s, eps)
    out = md.losses.training_target(target, x0_in, eps, torch.full((3,), t), s)
    torch.testing.assert_close(Thresholded(4.0, s, target)(out, out, t, x_t), out)


@pytest.mark.parametrize("target", ["eps", "x0", "v"])
def test_static_clipping_clamps_the_guided_x0_to_the_data_range(target):
    s = md.NoiseSchedule.linear(1000)
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64)
    cond, uncond = (3 * torch.randn(2, 2, 1, 8, 8, generator=g, dtype=torch.float64)).unbind(0)
    t = 300
    out = Thresholded(3.0, s, target, percentile=None)(cond, uncond, t, x_t)
    _, x0 = md.eps_and_x0(out, x_t, t, s, target)
    _, x0_guided = md.eps_and_x0(cfg_mix(cond, uncond, 3.0), x_t, t, s, target)
    # clipped, not rescaled (float32 inside)
    torch.testing.assert_close(x0, x0_guided.clamp(-1, 1), atol=1e-5, rtol=1e-5)


def test_dynamic_threshold_shrinks_an_overshooting_image_and_keeps_one_in_range():
    x0 = torch.tensor([[[[-1.0, 0.5, 2.0, -3.0]]], [[[0.1, -0.2, 0.9, -1.0]]]])
    out = md.guidance.dynamic_threshold(x0, percentile=1.0)             # q = max |x̂_0| per image
    torch.testing.assert_close(out[0], x0[0] / 3)                         # an overshoot is shrunk as a whole
    torch.testing.assert_close(out[1], x0[1])                             # q = max(q, 1) = 1: unchanged


def test_thresholded_refuses_a_percentile_outside_zero_one():
    with pytest.raises(ValueError, match="percentile must be in"):
        Thresholded(2.0, md.NoiseSchedule.linear(10), "eps", percentile=1.5)


def test_variants_run_through_every_sampler():
    s = md.NoiseSchedule.linear(50)
    model = tiny_unet()
    y = torch.tensor([0, 1])
    for guide in (Rescaled(3.0), Interval(3.0, 10, 40), Thresholded(3.0, s, "eps"), Thresholded(3.0, s, "v", None)):
        for name in ("ddim", "dpm++", "ddpm"):
            with torch.no_grad():
                x = md.samplers.sample(name, model, s, (2, 1, 8, 8), 3, y, guide,
                                       generator=torch.Generator().manual_seed(0))
            assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all(), (guide, name)


# -- several attributes, composed ---------------------------------------------------------------
def attribute_unet(counts=(4, 8)) -> md.UNet:
    torch.manual_seed(0)
    model = md.UNet(md.UNetConfig(image_size=8, in_channels=3, base_channels=8, channel_mults=(1, 2),
                                  blocks_per_level=1, attention_resolutions=(), dropout=0.0, num_classes=counts)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_each_attribute_has_its_own_rows_and_null_label():
    model = attribute_unet()
    assert model.null_label == (4, 8) and model.class_emb.num_embeddings == 5 + 9
    t = torch.tensor([3, 3])
    y = torch.tensor([[1, 6], [4, 8]])                                 # a square in cyan; nothing given
    table = model.class_emb.weight
    expected = (model.time_mlp(md.timestep_embedding(t, 8))
                + torch.stack([table[1] + table[5 + 6], table[4] + table[5 + 8]]))
    torch.testing.assert_close(model.embed(t, y, 2, torch.device("cpu")), expected)
    # no labels at all is the same as every attribute's null label
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(model(x, t), model(x, t, torch.tensor([[4, 8], [4, 8]])))


def test_attributes_are_dropped_independently_at_the_given_rate():
    y = torch.zeros(40_000, 2, dtype=torch.long)
    dropped = drop_labels(y, 0.2, (4, 8), torch.Generator().manual_seed(0)) != 0
    assert torch.equal(drop_labels(y, 0.2, (4, 8), torch.Generator().manual_seed(0))[dropped[:, 0], 0],
                       torch.full((int(dropped[:, 0].sum()),), 4))
    rate = dropped.double().mean(0)
    assert torch.allclose(rate, torch.tensor([0.2, 0.2], dtype=torch.float64), atol=0.01)
    assert abs(dropped.all(1).double().mean().item() - 0.04) < 0.005          # both at once: 0.2 × 0.2


def test_labels_in_turn_run_through_every_combination():
    y = md.conditioning.labels_in_turn(64, (4, 8))
    assert y.shape == (64, 2)
    assert len({tuple(r) for r in y[:32].tolist()}) == 32 and torch.equal(y[:32], y[32:])
    assert y[:5, 0].tolist() == [0, 1, 2, 3, 0]                            # the first attribute changes fastest
    assert torch.equal(md.conditioning.labels_in_turn(12, 10), torch.arange(12) % 10)


def test_labels_of_the_wrong_form_or_range_are_refused_naming_the_attribute():
    model, s = attribute_unet(), md.NoiseSchedule.linear(20)
    with pytest.raises(ValueError,
                       match=r"y must be a LongTensor of shape \(2, 2\), one label per image and attribute"):
        md.ddim_sample(model, s, (2, 3, 8, 8), steps=2, y=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"y\[:, k\] must hold labels in \[0, n_k\].*\(4, 8\).*\(3, 9\)"):
        md.ddim_sample(model, s, (2, 3, 8, 8), steps=2, y=torch.tensor([[0, 3], [2, 9]]))
    with pytest.raises(ValueError, match="labels must be a LongTensor"):
        md.Trainer(model, torch.zeros(4, 3, 8, 8), torch.zeros(4, 3, dtype=torch.long),
                   md.train.TrainConfig(steps=1, batch_size=2), md.objectives.DiffusionObjective())


def test_composed_with_one_term_is_classifier_free_guidance():
    model, s = tiny_unet(), md.NoiseSchedule.linear(50)
    gen = lambda: torch.Generator().manual_seed(0)
    guided = md.ddim_sample(model, s, (3, 1, 8, 8), steps=4, y=torch.full((3,), 2), guidance_scale=2.5, generator=gen())
    composed = md.ddim_sample(md.guidance.Composed(model, [(2, 2.5)]), s, (3, 1, 8, 8), steps=4, generator=gen())
    torch.testing.assert_close(composed, guided)


def test_composed_is_the_sum_of_weighted_differences_from_its_base():
    model = attribute_unet()
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([5, 5])
    f = lambda row: model(x, t, torch.tensor([row, row]))
    # "a circle, not red": from (circle, any colour), away from (circle, red)
    composed = md.guidance.Composed(model, [((0, 0), -1.5), ((None, 3), 2.0)], base=(0, None))
    expected = f([0, 8]) - 1.5 * (f([0, 0]) - f([0, 8])) + 2.0 * (f([4, 3]) - f([0, 8]))
    torch.testing.assert_close(composed(x, t), expected)
    assert composed.target == model.target and getattr(composed, "null_label", None) is None


def test_composed_refuses_conditions_that_do_not_fit_the_model():
    model = attribute_unet()
    with pytest.raises(ValueError, match=r"terms\[0\] must give 2 labels"):
        md.guidance.Composed(model, [((0,), 3.0)])
    with pytest.raises(ValueError, match=r"terms\[1\] must hold labels in \[0, 8\] or None"):
        md.guidance.Composed(model, [((0, 1), 3.0), ((None, 9), 1.0)])
    with pytest.raises(ValueError, match="terms must hold at least one"):
        md.guidance.Composed(model, [])
    with pytest.raises(ValueError, match="weight must be a finite number"):
        md.guidance.Composed(model, [((0, 1), float("nan"))])
    with pytest.raises(ValueError, match="sample it without labels"):
        md.guidance.Composed(model, [((0, 1), 2.0)])(torch.zeros(1, 3, 8, 8), 3, torch.tensor([[0, 1]]))
