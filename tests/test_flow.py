"""Flow matching (minidiff.flow): the path and the sampler against two peer libraries' own numbers
(tests/data/flow_reference.json, made by scripts/make_flow_reference.py), and the identities notebook 09 states."""
import json
from pathlib import Path

import pytest
import torch

import minidiff as md
from minidiff import flow

REFERENCE = json.loads((Path(__file__).parent / "data" / "flow_reference.json").read_text())


# -- against the peers -------------------------------------------------------------------------------
def test_path_and_velocity_equal_flow_matchings_cond_ot_path():
    """flow_matching's CondOTProbPath runs the other way (noise at its s = 0): at s = 1 − t its x_t is ours and
    its velocity dX/ds is ours negated."""
    ref = REFERENCE["path"]
    x0, eps, t = (torch.tensor(ref[k]) for k in ("x0", "eps", "t"))
    x_t = flow.flow_interpolate(x0, eps, t)
    torch.testing.assert_close(x_t, torch.tensor(ref["peer_x_t"]), atol=1e-6, rtol=0)
    torch.testing.assert_close(flow.flow_target(x0, eps), -torch.tensor(ref["peer_dx_t"]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("case", REFERENCE["shift_euler"], ids=lambda c: f"steps{c['steps']}-shift{c['shift']}")
def test_shifted_times_and_euler_steps_equal_diffusers(case):
    times = flow.flow_timesteps(case["steps"], case["shift"])
    torch.testing.assert_close(times, torch.tensor(case["peer_times"]), atol=1e-6, rtol=0)
    x = torch.tensor(case["peer_xs"][0])
    outputs = torch.tensor(case["outputs"])
    for i, (t, t_next) in enumerate(zip(times[:-1].tolist(), times[1:].tolist())):
        x = flow.euler_step(x, outputs[i], t, t_next)
        torch.testing.assert_close(x, torch.tensor(case["peer_xs"][i + 1]), atol=1e-6, rtol=0)


def test_flow_sample_is_the_euler_loop_on_the_shifted_times():
    """flow_sample = x ~ N(0, I) from its generator, then the Euler steps above on flow_timesteps (both checked
    against diffusers), with the model called as model(x, t) and t of shape (B,) holding the current time."""
    case = REFERENCE["shift_euler"][1]
    outputs = torch.tensor(case["outputs"])
    seen = []

    def recorded(x, t):
        seen.append(t.clone())
        return outputs[len(seen) - 1]

    x = flow.flow_sample(recorded, (2, 3), steps=case["steps"], shift=case["shift"],
                         generator=torch.Generator().manual_seed(7))
    expected = torch.randn(2, 3, generator=torch.Generator().manual_seed(7))
    times = case["peer_times"]
    for i in range(case["steps"]):
        expected = expected + (times[i + 1] - times[i]) * outputs[i]
        torch.testing.assert_close(seen[i], torch.full((2,), times[i]), atol=1e-6, rtol=0)
    torch.testing.assert_close(x, expected, atol=1e-6, rtol=0)


# -- identities ------------------------------------------------------------------------------------
def test_the_line_through_x_t_gives_back_x0_and_eps():
    g = torch.Generator().manual_seed(1)
    x0, eps, t = torch.randn(5, 1, 4, 4, generator=g), torch.randn(5, 1, 4, 4, generator=g), torch.rand(5, generator=g)
    x_t, u = flow.flow_interpolate(x0, eps, t), flow.flow_target(x0, eps)
    torch.testing.assert_close(flow.x0_from_velocity(x_t, u, t), x0)
    torch.testing.assert_close(flow.eps_from_velocity(x_t, u, t), eps)


def test_shift_one_is_no_shift_and_the_ends_stay_put():
    t = torch.linspace(0, 1, 11)
    torch.testing.assert_close(flow.shift_time(t, 1.0), t)
    for shift in (0.5, 3.0):
        s = flow.shift_time(t, shift)
        assert s[0] == 0 and s[-1] == 1 and bool((s.diff() > 0).all())
        assert bool((s[1:-1] > t[1:-1]).all()) == (shift > 1)      # > 1 moves every inner time towards the noise


def test_logit_normal_times_have_the_asked_logit_mean_and_std():
    t = flow.logit_normal_t(200_000, mean=0.5, std=0.8, generator=torch.Generator().manual_seed(0))
    logit = torch.log(t / (1 - t))
    assert abs(logit.mean().item() - 0.5) < 0.01 and abs(logit.std().item() - 0.8) < 0.01
    assert bool(((t > 0) & (t < 1)).all())


def gaussian_velocity(mu: float, s: float):
    r"""The exact marginal velocity for data N(mu, s²) on the straight path: with a = 1 − t, b = t,
    x_t ~ N(a mu, a² s² + b²) and E[u | x_t] = (b − a s²)/(a² s² + b²) · (x − a mu) − mu."""
    def u(x, t):
        a, b = 1 - t.view(-1, *[1] * (x.ndim - 1)), t.view(-1, *[1] * (x.ndim - 1))
        return (b - a * s ** 2) / (a ** 2 * s ** 2 + b ** 2) * (x - a * mu) - mu
    return u


def test_many_euler_steps_with_the_exact_velocity_land_on_the_data_distribution():
    mu, s = 0.3, 0.5
    x = flow.flow_sample(gaussian_velocity(mu, s), (20_000, 1), steps=400, generator=torch.Generator().manual_seed(0))
    assert abs(x.mean().item() - mu) < 0.02 and abs(x.std().item() - s) < 0.02


def test_heun_beats_euler_at_few_steps():
    """Few-step bias (NOTES: 8 Euler steps land far from sd 0.5): Heun's second order closes most of the gap."""
    mu, s, g = 0.3, 0.5, lambda: torch.Generator().manual_seed(0)
    euler = flow.flow_sample(gaussian_velocity(mu, s), (20_000, 1), steps=8, generator=g())
    heun = flow.flow_sample(gaussian_velocity(mu, s), (20_000, 1), steps=8, solver="heun", generator=g())
    assert abs(heun.std().item() - s) < abs(euler.std().item() - s) / 2


def test_ddim_is_euler_in_the_right_variables():
    r"""DDIM (eta = 0) is an Euler step of dx̄/dτ = ε̂ in x̄ = x/√ᾱ and τ = √(1 − ᾱ)/√ᾱ (Song et al. 2021, §4.3)."""
    s = md.NoiseSchedule.cosine(1000)
    g = torch.Generator().manual_seed(0)
    x_t, eps = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    t, t_prev = 700, 400
    abar, abar_prev = s.alphas_cumprod[t], s.alphas_cumprod[t_prev]
    tau, tau_prev = ((1 - abar) / abar).sqrt(), ((1 - abar_prev) / abar_prev).sqrt()
    ddim = md.ddim_step(x_t, eps, t, t_prev, s)
    euler = flow.euler_step(x_t / abar.sqrt(), eps, tau.item(), tau_prev.item()) * abar_prev.sqrt()
    torch.testing.assert_close(ddim, euler, atol=1e-5, rtol=1e-5)


def test_a_v_prediction_is_a_flow_velocity_on_the_straight_path_at_the_same_snr():
    """u = (σ − α)·x_t + (α + σ)·v = ε − x0, and x_t/(α + σ) is the straight path's point at t = σ/(α + σ)."""
    s = md.NoiseSchedule.cosine(1000)
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(4, 1, 5, 5, generator=g), torch.randn(4, 1, 5, 5, generator=g)
    t = torch.tensor([0, 250, 700, 999])
    alpha, sigma = md.extract(s.sqrt_alphas_cumprod, t, x0), md.extract(s.sqrt_one_minus_alphas_cumprod, t, x0)
    x_t, v = alpha * x0 + sigma * eps, alpha * eps - sigma * x0
    torch.testing.assert_close(flow.velocity_from_v(v, x_t, alpha, sigma), eps - x0, atol=1e-5, rtol=1e-5)
    tau = flow.flow_time(alpha, sigma)
    straight = flow.flow_interpolate(x0, eps, tau.flatten())
    torch.testing.assert_close(x_t / (alpha + sigma), straight, atol=1e-6, rtol=1e-5)


def test_ddim_is_euler_on_the_straight_path_with_the_velocity_from_v():
    """A deterministic DDIM step of a v-model equals an Euler step of u = (σ − α)x_t + (α + σ)v in the straight
    path's variables x/(α + σ) and t = σ/(α + σ): the notebook's claim, on a random v-model."""
    s = md.NoiseSchedule.cosine(1000)
    weight = torch.randn(1, 1, 3, 3, generator=torch.Generator().manual_seed(2))

    def v_model(x, t):
        return torch.nn.functional.conv2d(x, weight, padding=1) * (1 + t.view(-1, 1, 1, 1) / 1000)
    x = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(3))
    for t, t_prev in [(999, 800), (800, 300), (300, -1)]:
        (a, sg), (a2, sg2) = s.alpha_sigma(t), s.alpha_sigma(t_prev)
        v = v_model(x, torch.full((2,), t))
        eps = sg * x + a * v
        ddim = md.ddim_step(x, eps, t, t_prev, s, x0=a * x - sg * v)      # x̂0 from v: no 1/α near T
        u = flow.velocity_from_v(v, x, torch.tensor(a), torch.tensor(sg))
        tau, tau2 = sg / (a + sg), sg2 / (a2 + sg2)
        euler = flow.euler_step(x / (a + sg), u, tau, tau2) * (a2 + sg2)
        torch.testing.assert_close(ddim, euler, atol=1e-5, rtol=1e-5)
        x = ddim


def test_flow_loss_is_the_objectives_loss_and_reflow_the_same_loss_on_the_pairs():
    model = TinyConditional()
    g = torch.Generator().manual_seed(4)
    x0, eps = torch.randn(6, 1, 3, 3, generator=g), torch.randn(6, 1, 3, 3, generator=g)
    y, t = torch.tensor([0, 1, 2, 0, 1, 2]), torch.rand(6, generator=g)
    want = ((model(flow.flow_interpolate(x0, eps, t), t, y) - (eps - x0)) ** 2).mean()
    torch.testing.assert_close(flow.flow_loss(model, x0, eps, t, y), want)
    config = md.FlowConfig(time="uniform", p_uncond=0.0)
    torch.manual_seed(5)
    loss, _ = flow.FlowObjective(config)(model, (x0, y))
    torch.manual_seed(5)
    noise, times = torch.randn_like(x0), torch.rand(6)
    torch.testing.assert_close(loss, flow.flow_loss(model, x0, noise, times, y))
    pairs = flow.pack_pairs(x0, eps)
    assert pairs.shape == (6, 2, 3, 3)
    torch.testing.assert_close(torch.cat(flow.unpack_pairs(pairs), 1), pairs)
    torch.manual_seed(6)
    loss, _ = flow.ReflowObjective(config)(model, (pairs, y))
    torch.manual_seed(6)
    torch.testing.assert_close(loss, flow.flow_loss(model, x0, eps, torch.rand(6), y))
    with pytest.raises(ValueError, match="eps must have the shape of x0"):
        flow.pack_pairs(x0, eps[:, :, :2])


def test_a_reflowed_model_trains_on_its_pairs_and_loads_as_a_flow_model(tmp_path):
    model = tiny_flow_unet()
    x1 = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    x0 = flow.flow_integrate(model, x1, steps=2)
    trainer = md.Trainer(model, flow.pack_pairs(x0, x1), train=md.TrainConfig(steps=4, batch_size=8, warmup_steps=1),
                         objective=flow.ReflowObjective(md.FlowConfig(time="uniform", p_uncond=0.0)),
                         run=md.RunConfig(device="cpu", log_every=2, progress=False, checkpoint_every=4,
                                          out_dir=str(tmp_path)))
    trainer.train()
    assert trainer.objective.describe()["kind"] == "reflow"
    loaded, path, config = md.load_trained(tmp_path / "checkpoint.pt")
    assert isinstance(path, md.FlowPath) and loaded.target == "u" and config.time == "uniform"


def test_straightness_is_zero_for_straight_paths_and_positive_for_curved_ones():
    x1 = torch.randn(64, 2, generator=torch.Generator().manual_seed(8))
    constant = lambda x, t: torch.ones_like(x)                            # every path a line at one speed
    assert flow.straightness(constant, x1, steps=8) == pytest.approx(0.0, abs=1e-12)
    mixture = flow.GaussianMixtureFlow([0.5, 0.5], [[-2.0, 0.0], [2.0, 0.0]], [0.3, 0.3])
    curved = flow.straightness(lambda x, t: mixture.velocity(x, t).float(), x1, steps=50)
    assert curved > 0.05, curved


# -- guidance and bad input ----------------------------------------------------------------------------
class TinyConditional(torch.nn.Module):
    null_label = 3

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(4, 1)

    def forward(self, x, t, y):
        return x * t.view(-1, 1, 1, 1) + self.embed(y).view(-1, 1, 1, 1)


def test_guidance_scale_one_is_the_conditional_model_and_zero_the_unconditional():
    model, y = TinyConditional(), torch.tensor([0, 1, 2])
    def run(**kw):
        return flow.flow_sample(model, (3, 1, 2, 2), steps=4, y=y, generator=torch.Generator().manual_seed(0), **kw)
    torch.testing.assert_close(run(guidance_scale=1.0), run())
    unconditional = flow.flow_sample(model, (3, 1, 2, 2), steps=4, y=torch.full((3,), 3),
                                     generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(run(guidance_scale=0.0), unconditional)


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, "steps must be an int >= 1"),
    ({"steps": 2.5}, "steps must be an int >= 1"),
    ({"solver": "rk4"}, "solver must be 'euler' or 'heun'; got 'rk4'"),
    ({"shift": 0.0}, "shift must be a finite number > 0"),
    ({"shift": float("nan")}, "shift must be a finite number > 0"),
    ({"guidance_scale": 2.0}, "guidance_scale needs labels y"),
    ({"guidance_scale": float("inf"), "y": torch.tensor([0, 1])}, "guidance_scale must be a finite number"),
    ({"y": torch.tensor([0, 9])}, "y must hold labels in [0, 2]"),
])
def test_bad_input_names_the_argument(kwargs, message):
    model = TinyConditional() if "y" in kwargs else (lambda x, t: x)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        flow.flow_sample(model, (2, 1, 2, 2), **{"steps": 2, **kwargs})


def test_bad_shape_is_an_error():
    with pytest.raises(ValueError, match="shape must be a tuple of non-negative ints"):
        flow.flow_sample(lambda x, t: x, (2, -1), steps=2)


# -- the exact toy: conditional targets, marginal velocity ------------------------------------------------
TOY = flow.GaussianMixtureFlow([0.5, 0.3, 0.2], [[-2.0, 0.0], [1.5, 1.5], [1.0, -2.0]], [0.3, 0.5, 0.2])


def test_the_marginal_velocity_is_the_mean_conditional_target():
    """u*(x, t) = E[ε − x₀ | x_t = x]: the mean of the conditional targets of the pairs that land near x."""
    g = torch.Generator().manual_seed(0)
    x0 = TOY.sample(400_000, g)
    eps = torch.randn(x0.shape, dtype=torch.float64, generator=g)
    t = 0.6
    x_t, u = flow.flow_interpolate(x0, eps, t), flow.flow_target(x0, eps)
    for point in ([-0.8, 0.0], [0.6, 0.5], [0.2, -0.6]):
        near = ((x_t - torch.tensor(point, dtype=torch.float64)) ** 2).sum(1) < 0.05 ** 2
        exact = TOY.velocity(torch.tensor([point], dtype=torch.float64), torch.tensor([t]))[0]
        n = int(near.sum())
        standard_error = u[near].std(0) / n ** 0.5
        assert n > 300 and bool(((u[near].mean(0) - exact).abs() < 4 * standard_error).all()), \
            (point, n, u[near].mean(0), exact, standard_error)


def test_the_marginal_velocity_solves_the_continuity_equation():
    r"""∂p_t/∂t + ∇·(p_t u*) = 0, by central differences on a grid, relative to the size of ∂p/∂t."""
    xs = torch.linspace(-3, 3, 121, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2)
    h, dt = float(xs[1] - xs[0]), 1e-4
    for t in (0.3, 0.7):
        tt = torch.full((len(grid),), t, dtype=torch.float64)
        p = lambda x, s: TOY.log_prob(x, torch.full((len(x),), s, dtype=torch.float64)).exp()
        dp_dt = (p(grid, t + dt) - p(grid, t - dt)) / (2 * dt)
        flux = (p(grid, t)[:, None] * TOY.velocity(grid, tt)).reshape(121, 121, 2)
        div = torch.gradient(flux[..., 0], spacing=h, dim=0)[0] + torch.gradient(flux[..., 1], spacing=h, dim=1)[0]
        residual = (dp_dt.reshape(121, 121) + div)[5:-5, 5:-5]
        assert residual.abs().max() < 0.01 * dp_dt.abs().max(), (t, residual.abs().max(), dp_dt.abs().max())


def test_the_exact_velocity_carries_noise_to_the_mixture():
    x = flow.flow_sample(TOY.velocity, (40_000, 2), steps=200, generator=torch.Generator().manual_seed(0)).double()
    nearest = ((x[:, None, :] - TOY.means) ** 2).sum(-1).argmin(1)
    fractions = torch.bincount(nearest, minlength=3).double() / len(x)
    torch.testing.assert_close(fractions, TOY.weights, atol=0.01, rtol=0)
    for k in range(3):
        torch.testing.assert_close(x[nearest == k].mean(0), TOY.means[k], atol=0.03, rtol=0)


def test_gaussian_mixture_checks_its_arguments():
    with pytest.raises(ValueError, match="must agree on K"):
        flow.GaussianMixtureFlow([0.5, 0.5], [[0.0, 0.0]], [1.0, 1.0])
    with pytest.raises(ValueError, match="weights must be > 0 and sum to 1"):
        flow.GaussianMixtureFlow([0.5, 0.6], [[0.0], [1.0]], [1.0, 1.0])


# -- the flow path inside the package: objective, U-Net time, loaders, samplers that refuse the other kind ------
def tiny_flow_unet(**kw) -> md.UNet:
    torch.manual_seed(0)
    return md.UNet(md.UNetConfig(image_size=8, base_channels=8, channel_mults=(1, 2), blocks_per_level=1,
                                 attention_resolutions=(), head_dim=8, time_scale=1000.0, **kw))


def test_flow_path_is_the_straight_line():
    path = md.FlowPath()
    assert path.alpha_sigma(0.0) == (1.0, 0.0) and path.alpha_sigma(0.25) == (0.75, 0.25)
    with pytest.raises(ValueError, match=r"t must be in \[0, 1\]"):
        path.alpha_sigma(1.5)


def test_time_scale_feeds_the_embedding_scaled_time():
    scaled, plain = tiny_flow_unet(), tiny_flow_unet()
    plain.config = md.UNetConfig(**{**vars(plain.config), "time_scale": 1.0})
    t = torch.tensor([0.0, 0.3, 1.0])
    torch.testing.assert_close(scaled.embed(t, None, 3, t.device), plain.embed(1000 * t, None, 3, t.device))


def test_the_trainer_learns_the_velocity_with_the_flow_objective():
    images = torch.linspace(-1, 1, 64).view(1, 1, 8, 8).repeat(64, 1, 1, 1)     # one image: u is learnable
    model = tiny_flow_unet()
    trainer = md.Trainer(model, images, train=md.TrainConfig(steps=60, batch_size=16, lr=3e-3, warmup_steps=5),
                         objective=md.FlowConfig(time="uniform", p_uncond=0.0),
                         run=md.RunConfig(device="cpu", log_every=10, progress=False))
    trainer.train()
    assert model.target == "u" and trainer.ema.target == "u"
    losses = [loss for _, loss in trainer.loss_history]
    assert losses[-1] < 0.5 * losses[0], losses
    rebuilt = md.objectives.objective_from_description(trainer.objective.describe())
    assert isinstance(rebuilt, md.FlowObjective) and rebuilt.config == trainer.objective.config


def test_each_sampler_refuses_the_other_kind_of_model():
    flow_model = tiny_flow_unet()
    flow_model.target = "u"
    with pytest.raises(ValueError, match="predicts the flow velocity u.*md.flow_sample"):
        md.ddim_sample(flow_model, md.NoiseSchedule.linear(1000), (2, 1, 8, 8), steps=2)
    v_model = tiny_flow_unet()
    v_model.target = "v"
    with pytest.raises(ValueError, match="predicts 'v', a diffusion target"):
        md.flow_sample(v_model, (2, 1, 8, 8), steps=2)
    with pytest.raises(ValueError, match="trains the velocity 'u'"):
        md.FlowObjective(md.FlowConfig(p_uncond=0.0)).prepare(v_model, (torch.zeros(2, 1, 8, 8),))


@pytest.mark.parametrize("kwargs, message", [({"time": "beta"}, "FlowConfig.time must be one of"),
                                             ({"std": 0.0}, "std > 0"), ({"p_uncond": 1.5}, "p_uncond must be in")])
def test_flow_config_names_a_bad_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        md.FlowConfig(**kwargs)


def test_generate_draws_from_a_shipped_model_with_its_own_sampler():
    x = md.generate("mnist_cond", n=3, steps=2, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 1, 28, 28) and float(x.min()) >= -1 and float(x.max()) <= 1
    same = md.generate("mnist_cond", labels=torch.tensor([0, 1, 2]), steps=2,
                       generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, same)                              # labels in turn: 0, 1, 2
    with pytest.raises(ValueError, match=r"n must match the number of labels \(2\)"):
        md.generate("mnist_cond", labels=torch.tensor([0, 1]), n=3)
    with pytest.raises(TypeError, match="shapes_ldm draws captions"):
        md.generate("shapes_ldm", labels=torch.tensor([0]))
    with pytest.raises(ValueError, match="name must be a shipped generative model"):
        md.generate("classifier")


def test_the_cli_refuses_a_flow_solver_for_a_diffusion_model(tmp_path, capsys):
    from minidiff.__main__ import main
    assert main(["sample", "--checkpoint", "mnist_cond", "--sampler", "euler", "--out", str(tmp_path / "g.png"),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "is a diffusion model: --sampler must be one of ('ddim', 'dpm++', 'ddpm'); got euler" in err
    assert not (tmp_path / "g.png").exists()


# -- the shipped flow model ----------------------------------------------------------------------------------
def test_the_shipped_flow_model_loads_with_its_path_and_knows_it_predicts_u():
    model, path, config = md.load_diffusion("mnist_flow")
    assert isinstance(path, md.FlowPath) and isinstance(config, md.FlowConfig) and model.target == "u"
    assert model.config.time_scale == 1000.0 and model.null_label == 10
    entry = md.pretrained.manifest()["mnist_flow"]
    assert entry["metrics"]["fd_ratio"] <= 1.1 and entry["metrics"]["accuracy"] >= 0.98     # issue 32's bar, 16 calls


def test_generate_draws_digits_of_their_labels_from_the_flow_model():
    """Few calls, few images: the judge reads most of them as their label (the full protocol is in the manifest)."""
    x = md.generate("mnist_flow", labels=torch.arange(20) % 10, steps=8, generator=torch.Generator().manual_seed(0))
    assert x.shape == (20, 1, 28, 28) and float(x.abs().max()) <= 1
    assert md.class_accuracy(x, torch.arange(20) % 10) >= 0.85


def test_the_cli_samples_the_shipped_flow_model(tmp_path, capsys):
    from minidiff.__main__ import main
    out = tmp_path / "flow.png"
    assert main(["sample", "--checkpoint", "mnist_flow", "--n", "4", "--steps", "4", "--out", str(out),
                 "--device", "cpu"]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")
    assert main(["sample", "--checkpoint", "mnist_flow", "--sampler", "ddim", "--out", str(out),
                 "--device", "cpu"]) == 2
    assert "is a flow-matching model: --sampler must be one of ('euler', 'heun'); got ddim" in capsys.readouterr().err
