"""Editing (minidiff.editing, notebook 10): SDEdit and inpainting, their identities with the samplers, and the shipped
models doing what the notebook says (a 3 made an 8; a lower half filled with the right digit; kept pixels kept)."""
import math

import pytest
import torch

import minidiff as md
from minidiff import editing, flow


class TinyV(torch.nn.Module):
    """A fixed v-predicting network on (N, 1, 8, 8) with labels 0-2 (null 3)."""
    target, null_label, num_classes = "v", 3, 3

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
        self.embed = torch.nn.Embedding(4, 1)

    def forward(self, x, t, y=None):
        shift = 0 if y is None else self.embed(y).view(-1, 1, 1, 1)
        return self.conv(x) * (1 + t.float().view(-1, 1, 1, 1) / 1000) + shift


class TinyFlow(TinyV):
    target = "u"


SCHEDULE = md.NoiseSchedule.cosine(1000)


def images(n=4, seed=1):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_the_run_is_the_last_share_of_the_trailing_positions():
    positions = md.samplers.ddim_timesteps(1000, 50)
    assert editing.sdedit_positions(1000, 1.0, 50) == positions
    assert editing.sdedit_positions(1000, 0.3, 50) == positions[35:]           # ⌈0.3·50⌉ = 15 steps
    assert editing.sdedit_positions(1000, 0.001, 50) == [positions[-1]]       # at least one step
    assert editing.sdedit_positions(1000, 0.3, 10) == positions[::5][7:]


def test_sdedit_at_full_strength_is_ddim_from_the_noised_image():
    x, y, model = images(), torch.tensor([0, 1, 2, 0]), TinyV()
    got = md.sdedit(model, x, 1.0, steps=10, y=y, generator=torch.Generator().manual_seed(5), schedule=SCHEDULE)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    start = editing.sdedit_start(x, 999, SCHEDULE, noise)
    torch.testing.assert_close(start, md.q_sample(x, 999, SCHEDULE, noise))
    want = md.ddim_sample(model, SCHEDULE, x.shape, steps=10, y=y, x_T=start)
    torch.testing.assert_close(got, want)


def test_sdedit_on_a_flow_model_starts_on_the_straight_path_at_t0():
    x, model = images(), TinyFlow()
    got = md.sdedit(model, x, 1.0, steps=8, generator=torch.Generator().manual_seed(6))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(got, flow.flow_integrate(model, noise, 8))          # x_1 = ε: the image is gone
    half = md.sdedit(model, x, 0.5, steps=8, generator=torch.Generator().manual_seed(6))
    manual = flow.flow_interpolate(x, noise, 0.5)
    for t, t_next in zip([0.5, 0.375, 0.25, 0.125], [0.375, 0.25, 0.125, 0.0]):
        manual = flow.euler_step(manual, model(manual, torch.full((4,), t)), t, t_next)
    torch.testing.assert_close(half, manual)


def test_the_renoise_step_lands_on_q_of_the_higher_level():
    """x_t = √(ᾱ_t/ᾱ_t')·x_t' + √(1 − ᾱ_t/ᾱ_t')·ε keeps q(x_t | x_0): √ᾱ_t·x_0 and variance 1 − ᾱ_t."""
    s, x0 = SCHEDULE, torch.full((1, 1, 200, 200), 0.5)
    g = torch.Generator().manual_seed(7)
    lower = md.q_sample(x0, 300, s, torch.randn(x0.shape, generator=g))
    upper = editing.renoise_step(lower, 300, 600, s, torch.randn(x0.shape, generator=g))
    abar = s.alphas_cumprod[600].item()
    assert upper.mean().item() == pytest.approx(math.sqrt(abar) * 0.5, abs=0.01)
    assert upper.var().item() == pytest.approx(1 - abar, rel=0.02)
    assert torch.equal(editing.renoise_step(x0, -1, 0, s, torch.zeros_like(x0)),
                       math.sqrt(s.alphas_cumprod[0].item()) * x0)


@pytest.mark.parametrize("resample", [1, 3])
def test_inpainting_returns_the_kept_pixels_exactly(resample):
    x, model = images(), TinyV()
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 4:, :] = 1                                          # generate the lower half
    out = md.inpaint(model, x, mask, steps=6, generator=torch.Generator().manual_seed(0), schedule=SCHEDULE,
                     resample=resample)
    assert torch.equal(out[..., :4, :], x[..., :4, :]) and not torch.equal(out[..., 4:, :], x[..., 4:, :])
    nothing = md.inpaint(model, x, torch.zeros(4, 1, 8, 8), steps=3, schedule=SCHEDULE)
    assert torch.equal(nothing, x)
    flow_out = md.inpaint(TinyFlow(), x, mask, steps=4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(flow_out[..., :4, :], x[..., :4, :])


def test_the_merge_takes_the_model_where_the_mask_is_one():
    a, b = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 1, 2, 2)
    assert torch.equal(editing.inpaint_merge(a, b, mask), mask.expand(2, 1, 2, 2))


@pytest.mark.parametrize("kwargs, message", [
    ({"strength": 0.0}, "strength must be a number in \\(0, 1\\]"),
    ({"strength": 1.5}, "strength must be a number in \\(0, 1\\]"),
    ({"strength": True}, "strength must be a number"),
    ({"strength": 0.5, "steps": 0}, "steps must be an int >= 1"),
])
def test_sdedit_names_a_bad_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        md.sdedit(TinyV(), images(), schedule=SCHEDULE, **kwargs)


def test_inpaint_and_sdedit_name_bad_masks_images_and_missing_schedules():
    x = images()
    with pytest.raises(ValueError, match=r"mask must be a tensor of shape \(4 or 1, 1, 8, 8\).*got \(4, 8, 8\)"):
        md.inpaint(TinyV(), x, torch.ones(4, 8, 8), schedule=SCHEDULE)
    with pytest.raises(ValueError, match=r"mask values must be in \[0, 1\]"):
        md.inpaint(TinyV(), x, torch.full((1, 1, 8, 8), 2.0), schedule=SCHEDULE)
    with pytest.raises(ValueError, match="images must be a float tensor \\(N, C, H, W\\)"):
        md.sdedit(TinyV(), (x * 100).long(), 0.5, schedule=SCHEDULE)
    with pytest.raises(ValueError, match="schedule is needed for this diffusion model"):
        md.sdedit(TinyV(), x, 0.5)
    with pytest.raises(ValueError, match="resample > 1 is RePaint's"):
        md.inpaint(TinyFlow(), x, torch.ones(1, 1, 8, 8), resample=2)
    with pytest.raises(ValueError, match="resample must be an int >= 1"):
        md.inpaint(TinyV(), x, torch.ones(1, 1, 8, 8), schedule=SCHEDULE, resample=0)


def test_the_shipped_model_turns_threes_into_eights_and_low_strength_keeps_the_image():
    model, s, _ = md.load_diffusion("mnist_cond")
    held = md.mnist("heldout")
    threes = held.images[held.labels == 3][:10]
    eights = torch.full((10,), 8)
    g = lambda: torch.Generator().manual_seed(0)
    strong = md.sdedit(model, threes, 0.8, steps=10, y=eights, generator=g())          # the schedule came with it
    weak = md.sdedit(model, threes, 0.3, steps=10, y=torch.full((10,), 3), generator=g())
    assert md.metrics.class_accuracy(strong.clamp(-1, 1), eights) >= 0.8
    change = lambda edited: (edited.clamp(-1, 1) - threes).abs().mean().item()
    assert change(weak) <= change(strong) / 3, (change(weak), change(strong))


def test_the_shipped_model_fills_the_lower_half_with_the_asked_digit():
    model, s, _ = md.load_diffusion("mnist_cond")
    held = md.mnist("heldout")
    x, y = held.images[::100][:10], held.labels[::100][:10]
    mask = torch.zeros(1, 1, 28, 28)
    mask[..., 14:, :] = 1
    out = md.inpaint(model, x, mask, steps=10, y=y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[..., :14, :], x[..., :14, :])
    assert md.metrics.class_accuracy(out.clamp(-1, 1), y) >= 0.8


def test_text_to_image_edits_latents_with_a_caption():
    prompts = ["a red circle", "a blue square at the top left"]
    g = lambda: torch.Generator().manual_seed(0)
    source = md.text_to_image(prompts, steps=4, generator=g())
    edited = md.text_to_image(["a blue circle", "a red square at the top left"], steps=4, generator=g(),
                              init_images=source, strength=0.6)
    assert edited.shape == source.shape and edited.min() >= -1 and edited.max() <= 1
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., :, 32:] = 1
    filled = md.text_to_image(prompts, steps=4, generator=g(), init_images=source, mask=mask)
    assert torch.equal(filled[..., :32], source[..., :32])
    with pytest.raises(ValueError, match="exactly one of strength .* and mask"):
        md.text_to_image(prompts, steps=2, init_images=source, strength=0.5, mask=mask)
    with pytest.raises(ValueError, match="exactly one of strength"):
        md.text_to_image(prompts, steps=2, init_images=source)
    with pytest.raises(ValueError, match="pass init_images"):
        md.text_to_image(prompts, steps=2, strength=0.5)
    with pytest.raises(ValueError, match="one image per prompt \\(2\\); got 1"):
        md.text_to_image(prompts, steps=2, init_images=source[:1], strength=0.5)
