"""guidance.py: the classifier-free mix and its identities, label dropout, the null label, guidance as
a function (a variant is a few lines, not a new sampler argument), and bad scales."""
import math

import pytest
import torch

import minidiff as md
from minidiff.guidance import ClassifierFree, as_guidance, cfg_mix, drop_labels, guided_output, null_label


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

    def interval(cond, uncond, t, low=10, high=30, w=4.0):
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
    fn = lambda c, u, t: c
    assert as_guidance(fn) is fn
