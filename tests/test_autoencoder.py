"""The autoencoder of latent diffusion: the KL and the reparameterisation against their definitions, the
network's shapes and latent scale, the reconstruction objective, PSNR, training and exact resume through the
Trainer, saving and shipping it, and clear errors for bad input. Tiny models: seconds on one CPU thread."""
import math

import pytest
import torch

import minidiff as md
from minidiff import pretrained, registry
from minidiff.metrics import psnr
from minidiff.nn.autoencoder import Autoencoder, AutoencoderConfig, kl_divergence, reparameterise
from minidiff.objectives import AutoencoderObjective, ReconstructionConfig, as_objective, objective_from_description
from minidiff.train import RunConfig, TrainConfig, Trainer


def tiny_config(**changes) -> AutoencoderConfig:
    """16×16 RGB -> 8×8×2 (f = 2), about 20 k parameters."""
    return AutoencoderConfig(**{"in_channels": 3, "image_size": 16, "channels": (8, 16), "blocks_per_level": 1,
                                "latent_channels": 2, **changes})


def tiny_images(n=8, seed=0, size=16):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


QUIET = RunConfig(device="cpu", log_every=5, progress=False)


def _assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{what}[{key}] differs"


# -- the math ---------------------------------------------------------------------------------------
def test_kl_closed_form_equals_a_monte_carlo_estimate():
    r"""KL = E_q[log q(z) − log p(z)], estimated with 200,000 draws z = μ + σε per image."""
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64)
    logvar = torch.rand(2, 3, 2, 2, generator=g, dtype=torch.float64) * 2 - 1.5
    eps = torch.randn(200_000, *mean.shape, generator=g, dtype=torch.float64)
    z = mean + torch.exp(0.5 * logvar) * eps
    # log N(z; μ, σ²) − log N(z; 0, 1) per element; the −½ log 2π of both cancel
    log_ratio = -0.5 * logvar - 0.5 * eps ** 2 + 0.5 * z ** 2
    estimate = log_ratio.flatten(2).sum(dim=2).mean(dim=0)
    torch.testing.assert_close(kl_divergence(mean, logvar), estimate, rtol=0, atol=0.05)    # ~7 standard errors


def test_kl_is_zero_at_the_standard_normal_and_positive_elsewhere():
    zeros = torch.zeros(3, 4, 2, 2)
    assert torch.equal(kl_divergence(zeros, zeros), torch.zeros(3))
    assert kl_divergence(zeros + 1, zeros).tolist() == [8.0] * 3            # ½·μ²·(C·H·W) = ½·16
    g = torch.Generator().manual_seed(1)
    mean, logvar = torch.randn(5, 4, 2, 2, generator=g), torch.randn(5, 4, 2, 2, generator=g)
    assert kl_divergence(mean, logvar).shape == (5,) and (kl_divergence(mean, logvar) > 0).all()
    assert (kl_divergence(zeros, zeros + 0.1) > 0).all() and (kl_divergence(zeros, zeros - 0.1) > 0).all()
    with pytest.raises(ValueError, match=r"same shape.*got \(3, 4, 2, 2\) and \(3, 4\)"):
        kl_divergence(zeros, zeros.flatten(2).sum(2))


def test_reparameterise_is_mean_plus_sigma_times_noise_with_the_right_moments():
    g = torch.Generator().manual_seed(0)
    mean, logvar, noise = (torch.randn(2, 3, 4, 4, generator=g) for _ in range(3))
    torch.testing.assert_close(reparameterise(mean, logvar, noise), mean + torch.exp(logvar / 2) * noise)
    torch.testing.assert_close(reparameterise(mean, torch.zeros_like(mean), noise), mean + noise)
    mu, lv = torch.tensor([[1.5, -2.0, 0.0]]), torch.tensor([[0.0, math.log(4.0), math.log(0.01)]])
    draws = reparameterise(mu.expand(100_000, 3), lv.expand(100_000, 3), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(draws.mean(0), mu[0], atol=0.02, rtol=0)
    torch.testing.assert_close(draws.var(0), lv[0].exp(), atol=0, rtol=0.02)
    again = reparameterise(mu.expand(100_000, 3), lv.expand(100_000, 3), generator=torch.Generator().manual_seed(1))
    assert torch.equal(draws, again)
    with pytest.raises(ValueError, match=r"noise must have mean's shape \(2, 3, 4, 4\); got \(2, 3\)"):
        reparameterise(mean, logvar, noise[:, :, 0, 0])


def test_gradients_reach_mean_and_logvar():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(2, 4, generator=g).requires_grad_(), torch.randn(2, 4, generator=g).requires_grad_()
    noise = torch.randn(2, 4, generator=g)
    reparameterise(mean, logvar, noise).sum().backward()
    assert torch.equal(mean.grad, torch.ones_like(mean))                                   # ∂z/∂μ = 1
    torch.testing.assert_close(logvar.grad, 0.5 * torch.exp(0.5 * logvar.detach()) * noise)  # ∂z/∂logσ² = ½σε


# -- the network ---------------------------------------------------------------------------------
def test_the_default_config_is_no_larger_than_its_peer_and_makes_16x16x4_latents():
    model = Autoencoder()
    assert model.config == AutoencoderConfig() and model.config.factor == 4
    assert model.num_parameters() <= 3_790_000, model.num_parameters()      # diffusers' AutoencoderKL at 64-128-128
    assert model.latent_shape == (4, 16, 16)
    with torch.no_grad():
        reconstruction, mean, logvar = model(torch.zeros(1, 3, 64, 64))
    assert reconstruction.shape == (1, 3, 64, 64) and mean.shape == logvar.shape == (1, 4, 16, 16)


@pytest.mark.parametrize("channels, latent", [((8, 16), 8), ((8, 8, 8, 8), 2)])    # f = 2 and f = 8
def test_shapes_for_other_downsampling_factors(channels, latent):
    model = Autoencoder(tiny_config(channels=channels, mid_attention=True))
    x = tiny_images(2)
    assert model.latent_shape == (2, latent, latent) and model.encode(x).shape == (2, 2, latent, latent)
    reconstruction, mean, logvar = model(x)
    assert reconstruction.shape == x.shape and mean.shape == logvar.shape == (2, 2, latent, latent)
    assert model.decode(torch.zeros(3, 2, latent, latent)).shape == (3, 3, 16, 16)
    assert model(tiny_images(1, size=32))[1].shape == (1, 2, 2 * latent, 2 * latent)   # any size divisible by f


def test_logvar_is_clamped_as_stable_diffusion_does():
    model = Autoencoder(tiny_config())
    with torch.no_grad():
        model.encoder.out[2].bias[2:].fill_(1e3)                # the log-variance half of the output
        model.encoder.out[2].bias[:2].fill_(-1e3)
    _, logvar = model.moments(tiny_images(2))
    assert (logvar == 20.0).all()
    with torch.no_grad():
        model.encoder.out[2].bias[2:].fill_(-1e3)
    assert (model.moments(tiny_images(2))[1] == -30.0).all()


def test_encode_and_decode_honour_the_scale():
    torch.manual_seed(0)
    model = Autoencoder(tiny_config()).eval()
    x = tiny_images(4)
    mean, _ = model.moments(x)
    model.scale.fill_(2.5)
    torch.testing.assert_close(model.encode(x), 2.5 * mean)
    torch.testing.assert_close(model.decode(model.encode(x)), model.decoder(mean))
    reconstruction, mean_again, _ = model(x)
    assert torch.equal(mean_again, mean), "the training pass does not use the scale"


def test_measure_scale_makes_the_latents_unit_std():
    torch.manual_seed(0)
    model = Autoencoder(tiny_config()).train()
    images = tiny_images(20)
    scale = model.measure_scale(images, batch_size=7)               # three batches of 7, 7, 6
    assert isinstance(scale, float) and scale == pytest.approx(model.scale.item())
    assert model.training, "measure_scale restores the mode it found"
    with torch.no_grad():
        assert model.encode(images).std().item() == pytest.approx(1.0, rel=1e-4)
    assert "scale" in model.state_dict() and model.scale.dtype == torch.float32
    with pytest.raises(ValueError, match="batch_size must be an int >= 1; got 0"):
        model.measure_scale(images, batch_size=0)


# -- the objective -----------------------------------------------------------------------------------
def test_the_objective_is_the_formula_and_beta_adds_beta_times_the_kl():
    torch.manual_seed(0)
    model = Autoencoder(tiny_config())
    x = tiny_images(4)

    def run(config):
        torch.manual_seed(3)                                         # the same ε each time
        return AutoencoderObjective(config)(model, (x,))

    loss0, logs0 = run(ReconstructionConfig(beta=0.0))
    torch.manual_seed(3)
    reconstruction, mean, logvar = model(x)
    kl = (0.5 * (mean ** 2 + logvar.exp() - 1 - logvar)).sum(dim=(1, 2, 3)).mean()
    torch.testing.assert_close(loss0, (reconstruction - x).abs().mean())
    torch.testing.assert_close(logs0["recon"], loss0)
    torch.testing.assert_close(logs0["kl"], kl)
    mse = ((reconstruction.clamp(-1, 1) - x) / 2).pow(2).mean()
    torch.testing.assert_close(logs0["psnr"], 10 * torch.log10(1 / mse))
    assert all(not v.requires_grad for v in logs0.values())
    loss_beta, _ = run(ReconstructionConfig(beta=0.5))
    torch.testing.assert_close(loss_beta - loss0, 0.5 * kl)
    loss_l2, logs_l2 = run(ReconstructionConfig(loss="l2", beta=0.0))
    torch.testing.assert_close(loss_l2, (reconstruction - x).pow(2).mean())


def test_the_objective_describes_itself_and_checks_its_model_and_config():
    objective = AutoencoderObjective(ReconstructionConfig(loss="l2", beta=1e-4))
    assert objective.describe() == {"kind": "autoencoder", "config": {"loss": "l2", "beta": 1e-4}}
    again = objective_from_description(objective.describe())
    assert isinstance(again, AutoencoderObjective) and again.config == objective.config
    assert as_objective(objective) is objective and objective.to("cpu") is objective
    x = tiny_images(2)
    assert objective.example_inputs((x, torch.zeros(2, dtype=torch.long)))[0] is x
    objective.prepare(Autoencoder(tiny_config()), (x, torch.zeros(2, dtype=torch.long)))    # labels are allowed
    with pytest.raises(TypeError, match=r"model must be an autoencoder with moments\(x\) and decode\(z\).*got a UNet"):
        objective.prepare(md.UNet(md.UNetConfig(image_size=16, in_channels=3, base_channels=8, channel_mults=(1,),
                                                attention_resolutions=())), (x,))
    with pytest.raises(ValueError, match=r"autoencoder's 1 channel\(s\); got shape \(2, 3, 16, 16\)"):
        objective.prepare(Autoencoder(tiny_config(in_channels=1)), (x,))
    with pytest.raises(ValueError, match="loss must be one of \\('l1', 'l2'\\); got 'l3'"):
        ReconstructionConfig(loss="l3")
    for beta in (-1.0, math.inf, True, "0.1"):
        with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
            ReconstructionConfig(beta=beta)


def test_psnr_known_values():
    images = torch.zeros(2, 3, 4, 4)                          # 0.5 in [0, 1]
    off = images.clone()
    off[0] += 0.2                                             # 0.1 off in [0, 1]: MSE 0.01 -> 20 dB
    off[1] += 0.02                                            # MSE 1e-4 -> 40 dB
    torch.testing.assert_close(psnr(off, images), torch.tensor([20.0, 40.0]))
    assert torch.equal(psnr(images, images), torch.full((2,), math.inf))
    assert torch.isinf(psnr(images + 5, images + 1)).all(), "both are clamped to [-1, 1] first"
    with pytest.raises(ValueError, match=r"same shape; got \(2, 3, 4, 4\) and \(1, 3, 4, 4\)"):
        psnr(images, images[:1])


# -- through the Trainer -----------------------------------------------------------------------------
def test_the_trainer_trains_a_tiny_autoencoder_on_shapes():
    images, labels = md.Shapes(64, 16).batch(64)
    torch.manual_seed(0)
    trainer = Trainer(Autoencoder(tiny_config()), images, labels,                # labels are ignored
                      train=TrainConfig(steps=30, batch_size=16, lr=3e-3, warmup_steps=3, ema_decay=0.9),
                      objective=AutoencoderObjective(), run=QUIET)
    trainer.train()
    recon = [value for _, value in trainer.history["recon"]]
    assert len(recon) == 6 and recon[-1] < 0.7 * recon[0], recon
    assert trainer.history["psnr"][-1][1] > trainer.history["psnr"][0][1]
    assert set(trainer.history) >= {"loss", "recon", "kl", "psnr"}


def test_save_then_from_checkpoint_continues_exactly(tmp_path):
    images = tiny_images(16)
    train = TrainConfig(steps=6, batch_size=4, lr=3e-3, warmup_steps=2, ema_decay=0.5, seed=1)
    objective = AutoencoderObjective(ReconstructionConfig(beta=1e-3))
    torch.manual_seed(0)
    straight = Trainer(Autoencoder(tiny_config()), images, train=train, objective=objective, run=QUIET)
    straight.train()

    torch.manual_seed(0)
    first = Trainer(Autoencoder(tiny_config()), images, train=train, objective=objective, run=QUIET)
    first.train(3)
    path = first.save(tmp_path / "ae.pt")
    del first
    torch.manual_seed(12345)                    # scramble the global RNG (ε): resuming must restore it
    resumed = Trainer.from_checkpoint(path, images, run=QUIET)
    assert isinstance(resumed.model, Autoencoder) and resumed.model.config == tiny_config()
    assert isinstance(resumed.objective, AutoencoderObjective) and resumed.objective.config == objective.config
    resumed.train()
    assert resumed.step == straight.step == 6
    _assert_same_tensors(straight.model.state_dict(), resumed.model.state_dict(), "model")
    _assert_same_tensors(straight.ema.state_dict(), resumed.ema.state_dict(), "ema")


def test_save_model_and_load_model_keep_the_weights_and_the_scale(tmp_path):
    torch.manual_seed(0)
    model = Autoencoder(tiny_config(channels=(8, 8, 16)))
    model.measure_scale(tiny_images(8))
    description = registry.describe(model)
    assert description["kind"] == "autoencoder" and description["config"]["channels"] == [8, 8, 16]
    assert registry.build(description).config == model.config                   # lists back to tuples
    path = registry.save_model(tmp_path / "vae.pt", model)
    loaded, _ = registry.load_model(path)
    assert isinstance(loaded, Autoencoder) and not loaded.training
    _assert_same_tensors(model.state_dict(), loaded.state_dict(), "weights")
    assert loaded.scale.item() == model.scale.item() != 1.0


def test_load_autoencoder_from_a_shipped_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "CHECKPOINT_DIR", tmp_path)
    torch.manual_seed(0)
    model = Autoencoder(tiny_config())
    model.scale.fill_(0.5)
    config = {"model": registry.describe(model), "objective": AutoencoderObjective().describe()}
    pretrained.save_shipped("tiny_vae", model.state_dict(), recipe="tiny_vae", metrics={"psnr": 0.0}, config=config)
    loaded = pretrained.load_autoencoder("tiny_vae")
    assert isinstance(loaded, Autoencoder) and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters()) and loaded.scale.item() == 0.5
    _assert_same_tensors(model.state_dict(), loaded.state_dict(), "weights")
    assert pretrained.load_autoencoder("tiny_vae", device="cpu") is loaded           # cached
    assert pretrained.autoencoder_names() == ["tiny_vae"]
    unet = {"model": {"kind": "unet", "config": {}}, "objective": {"kind": "diffusion", "config": {}}}
    pretrained.save_shipped("toy_unet", {"w": torch.zeros(1)}, recipe="tiny", metrics={}, config=unet)
    assert pretrained.load_autoencoder("tiny_vae") is not loaded, "save_shipped empties the cache"
    with pytest.raises(ValueError, match=r"autoencoder, one of \['tiny_vae'\]; got 'toy_unet', which is a unet"):
        pretrained.load_autoencoder("toy_unet")
    with pytest.raises(ValueError, match="one of \\['tiny_vae', 'toy_unet'\\]; got 'shapes_vae'"):
        pretrained.load_autoencoder()


# -- bad input ---------------------------------------------------------------------------------------
def test_bad_inputs_are_clear_errors():
    model = Autoencoder(tiny_config(channels=(8, 8, 16)))                       # f = 4
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3, H, W\); got \(2, 1, 16, 16\)"):
        model(torch.zeros(2, 1, 16, 16))
    with pytest.raises(ValueError, match=r"divisible by f = 4.*got \(18, 16\)"):
        model.encode(torch.zeros(2, 3, 18, 16))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3, H, W\); got \(3, 16, 16\)"):
        model.moments(torch.zeros(3, 16, 16))
    with pytest.raises(TypeError, match="x must be a float tensor.*got torch.uint8"):
        model(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"z must be a float tensor of latents \(B, 2, h, w\); got torch.float32 \(1,"):
        model.decode(torch.zeros(1, 3, 4, 4))


@pytest.mark.parametrize("changes, match", [
    ({"image_size": 18, "channels": (8, 8, 16)},
     r"image_size must be divisible by f = 2\^\(len\(channels\) − 1\) = 4; got 18"),
    ({"channels": ()}, "channels must be a non-empty tuple of ints >= 1"),
    ({"channels": [8, 16]}, r"channels must be a non-empty tuple.*got \[8, 16\]"),
    ({"channels": (8, 0)}, "channels must be a non-empty tuple of ints >= 1"),
    ({"blocks_per_level": 0}, "blocks_per_level must be an int >= 1; got 0"),
    ({"latent_channels": 2.0}, "latent_channels must be an int >= 1; got 2.0"),
    ({"in_channels": True}, "in_channels must be an int >= 1; got True"),
    ({"mid_attention": 1}, "mid_attention must be True or False; got 1"),
])
def test_bad_configs_name_the_field(changes, match):
    with pytest.raises(ValueError, match=match):
        Autoencoder(tiny_config(**changes))
