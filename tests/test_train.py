"""The training loop: lr schedule, EMA, a loss that falls, exact resume for every objective, the NaN
guard (loss and gradient), a run owning its folder, DDP on gloo."""
import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import minidiff as md
from minidiff.checkpoint import CorruptCheckpointError, load_checkpoint
from minidiff.losses import diffusion_loss, per_sample_loss
from minidiff.objectives import ClassificationConfig, ClassificationObjective, loss_by_t
from minidiff.pretrained import load_trained
from minidiff.samplers import ddim_sample_fn
from minidiff.train import (
    DiffusionConfig,
    NonFiniteLossError,
    RunConfig,
    RunFolderBusyError,
    TrainConfig,
    Trainer,
    ema_decay_at,
    ema_update,
    lr_at,
)

HERE = Path(__file__).resolve().parent


def tiny_config(num_classes=3, dropout=0.1, image_size=8) -> md.UNetConfig:
    return md.UNetConfig(image_size=image_size, in_channels=1, base_channels=8, channel_mults=(1, 2),
                         blocks_per_level=1, attention_resolutions=(4,), dropout=dropout,
                         num_classes=num_classes, head_dim=8)


def tiny_data(n=32, seed=0, image_size=8):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, image_size, image_size, generator=g) * 2 - 1
    return images, torch.randint(0, 3, (n,), generator=g)


QUIET = RunConfig(device="cpu", log_every=2, progress=False)


# -- schedule and EMA -------------------------------------------------------------------------------
def test_lr_warms_up_then_decays_by_half_a_cosine():
    cfg = TrainConfig(steps=110, lr=1e-3, min_lr=1e-4, warmup_steps=10)
    assert lr_at(0, cfg) == pytest.approx(1e-4)                 # (0 + 1) / 10 of the peak
    assert lr_at(4, cfg) == pytest.approx(5e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)                 # warm-up ends at the peak
    assert lr_at(10, cfg) == pytest.approx(1e-3)                # the cosine starts at the peak
    assert lr_at(60, cfg) == pytest.approx(0.5 * (1e-3 + 1e-4))  # halfway down
    assert lr_at(110, cfg) == pytest.approx(1e-4)               # ends at min_lr ...
    assert lr_at(500, cfg) == pytest.approx(1e-4)               # ... and stays there
    values = [lr_at(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_lr_without_warmup_starts_at_the_peak():
    cfg = TrainConfig(steps=100, lr=2e-4, warmup_steps=0)
    assert lr_at(0, cfg) == 2e-4
    assert lr_at(100, cfg) == 0.0


def test_ema_update_is_the_convex_combination():
    ema, model = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    with torch.no_grad():
        for p in ema.parameters():
            p.fill_(1.0)
        for p in model.parameters():
            p.fill_(3.0)
    ema_update(ema, model, 0.75)
    for p in ema.parameters():                      # 0.75 · 1 + 0.25 · 3 = 1.5, exact in binary
        assert torch.equal(p, torch.full_like(p, 1.5))
    a, b = torch.nn.Linear(5, 5), torch.nn.Linear(5, 5)
    expected = [0.9 * pa.detach() + 0.1 * pb.detach() for pa, pb in zip(a.parameters(), b.parameters())]
    ema_update(a, b, 0.9)
    for p, e in zip(a.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-6, atol=1e-7)


def test_ema_decay_warmup_and_bad_decay():
    cfg = TrainConfig(ema_decay=0.999)
    assert ema_decay_at(0, cfg) == pytest.approx(0.1)
    assert ema_decay_at(10**6, cfg) == 0.999
    assert ema_decay_at(0, TrainConfig(ema_decay=0.999, ema_warmup=False)) == 0.999
    with pytest.raises(ValueError, match="decay"):
        ema_update(torch.nn.Linear(1, 1), torch.nn.Linear(1, 1), 1.5)


def test_per_sample_loss_averages_to_diffusion_loss():
    torch.manual_seed(0)
    model = md.UNet(tiny_config(num_classes=None)).eval()
    with torch.no_grad():                           # make the output non-zero (it starts zero-initialised)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x0, _ = tiny_data(4)
    s = md.NoiseSchedule.cosine(50)
    t, noise = torch.tensor([0, 10, 30, 49]), torch.randn_like(x0)
    for target, weighting in (("eps", None), ("v", "min_snr"), ("x0", "p2")):
        per_sample = per_sample_loss(model, x0, t, s, target, weighting, noise=noise)
        assert per_sample.shape == (4,)
        whole = diffusion_loss(model, x0, s, target, weighting, t=t, noise=noise)
        torch.testing.assert_close(per_sample.mean(), whole)


# -- configs and inputs ---------------------------------------------------------------------------
@pytest.mark.parametrize("make, match", [
    (lambda: TrainConfig(steps=0), "steps"),
    (lambda: TrainConfig(lr=-1.0), "lr"),
    (lambda: TrainConfig(ema_decay=1.0), "ema_decay"),
    (lambda: DiffusionConfig(schedule="quadratic"), "schedule"),
    (lambda: DiffusionConfig(target="score"), "target"),
    (lambda: DiffusionConfig(weighting="snr"), "weighting"),
    (lambda: DiffusionConfig(p_uncond=1.5), "p_uncond"),
    (lambda: RunConfig(checkpoint_every=10), "out_dir"),
    (lambda: RunConfig(log_every=0), "log_every"),
    (lambda: RunConfig(compile="fastest"), "compile"),
    (lambda: RunConfig(cuda_graph=True, compile="reduce-overhead"), "cuda_graph and compile"),
    (lambda: RunConfig(max_seconds=0), "max_seconds"),
    (lambda: RunConfig(max_seconds=float("nan")), "max_seconds"),
    (lambda: TrainConfig(lr=float("nan")), "lr"),
])
def test_bad_configs_name_the_field(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_data_is_refused():
    images, labels = tiny_data()
    conditional, unconditional = md.UNet(tiny_config()), md.UNet(tiny_config(num_classes=None))
    with pytest.raises(TypeError, match="images"):
        Trainer(conditional, (images * 127).to(torch.uint8), labels, run=QUIET)
    with pytest.raises(TypeError, match="labels"):
        Trainer(conditional, images, labels.float(), run=QUIET)
    with pytest.raises(ValueError, match="unconditional"):
        Trainer(unconditional, images, labels, run=QUIET)
    with pytest.raises(ValueError, match="p_uncond"):
        Trainer(conditional, images, None, objective=DiffusionConfig(p_uncond=0.1), run=QUIET)
    with pytest.raises(TypeError, match="objective"):
        Trainer(conditional, images, labels, objective="diffusion", run=QUIET)


def test_cuda_graph_needs_a_cuda_device():
    images, labels = tiny_data()
    with pytest.raises(ValueError, match="cuda_graph=True needs a CUDA device; got device cpu"):
        Trainer(md.UNet(tiny_config()), images, labels, run=RunConfig(device="cpu", cuda_graph=True, progress=False))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_training_learns_and_leaves_the_ema_copy_eager(tmp_path):
    """Replayed graphs train like eager steps: the loss falls, the EMA follows, checkpoints round-trip."""
    torch.manual_seed(0)
    images, labels = tiny_data(32)
    cfg = TrainConfig(steps=80, batch_size=16, lr=3e-3, warmup_steps=10, ema_decay=0.9)
    trainer = Trainer(md.UNet(tiny_config(dropout=0.0)), images, labels, train=cfg,
                      run=RunConfig(device="cuda", cuda_graph=True, log_every=20, progress=False))
    history = trainer.train()
    assert history[-1][1] < 0.7 * history[0][1], history
    x, t, y = torch.randn(4, 1, 8, 8, device="cuda"), torch.tensor([1, 2, 3, 4], device="cuda"), labels[:4].cuda()
    with torch.no_grad():
        assert trainer.ema(x, t, y).shape == x.shape                  # eager: any batch size works
    path = trainer.save(tmp_path / "graphed.pt")
    resumed = Trainer.from_checkpoint(path, images, labels, run=RunConfig(device="cuda", progress=False))
    _assert_same_tensors(resumed.model.state_dict(), trainer.model.state_dict(), "model")


# -- learning --------------------------------------------------------------------------------------
def test_loss_falls_when_overfitting_32_images():
    """The mean loss of the last 20 steps is well below that of the first 20 (about 0.3× in practice)."""
    torch.manual_seed(0)
    images, _ = tiny_data(32)
    model = md.UNet(tiny_config(num_classes=None, dropout=0.0))
    trainer = Trainer(model, images, train=TrainConfig(steps=80, batch_size=16, lr=3e-3, warmup_steps=10,
                                                       ema_decay=0.9),
                      run=RunConfig(device="cpu", log_every=20, progress=False))
    history = trainer.train()
    assert [step for step, _ in history] == [20, 40, 60, 80]
    first, last = history[0][1], history[-1][1]
    assert last < 0.7 * first, history
    buckets = loss_by_t(trainer.history)
    assert len(buckets) == 4 and len(buckets[-1][1]) == 10
    assert model.target == "eps"                     # the objective told the model what it predicts


def test_samples_every_n_steps_with_a_dummy_sampler(tmp_path):
    calls = []

    def sample_fn(model, step):
        assert not model.training and not any(p.requires_grad for p in model.parameters())
        calls.append(step)
        return torch.zeros(4, 1, 8, 8)

    images, labels = tiny_data()
    trainer = Trainer(md.UNet(tiny_config()), images, labels, TrainConfig(steps=6, batch_size=4),
                      run=RunConfig(device="cpu", sample_every=3, out_dir=str(tmp_path), progress=False),
                      sample_fn=sample_fn)
    trainer.train()
    assert calls == [3, 6] and [s for s, _ in trainer.samples] == [3, 6]
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["step_0000003.png", "step_0000006.png"]


def test_ddim_sample_fn_draws_the_same_noise_each_time():
    torch.manual_seed(0)
    model = md.UNet(tiny_config()).eval()
    fn = ddim_sample_fn(md.NoiseSchedule.linear(20), (3, 1, 8, 8), torch.tensor([0, 1, 2]), steps=2,
                        guidance_scale=2.0)
    torch.manual_seed(1)
    before = torch.get_rng_state()
    a, b = fn(model, 0), fn(model, 1)
    assert a.shape == (3, 1, 8, 8) and torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), before)           # the training RNG is untouched


# -- exact resume ----------------------------------------------------------------------------------
def _resume_configs():
    return (TrainConfig(steps=6, batch_size=8, lr=2e-3, warmup_steps=2, weight_decay=0.01, ema_decay=0.9,
                        grad_clip=0.5, seed=7),
            DiffusionConfig(schedule="cosine", num_steps=100, target="v", weighting="min_snr", p_uncond=0.3))


def _assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{what}[{key}] differs"


def test_resume_is_bit_identical(tmp_path):
    """6 steps straight == 3 steps, checkpoint, a fresh Trainer from the file, 3 more steps (dropout on)."""
    images, labels = tiny_data()
    train, diffusion = _resume_configs()
    torch.manual_seed(0)
    straight = Trainer(md.UNet(tiny_config(dropout=0.3)), images, labels, train, diffusion, QUIET)
    straight.train()

    torch.manual_seed(0)
    first = Trainer(md.UNet(tiny_config(dropout=0.3)), images, labels, train, diffusion, QUIET)
    first.train(3)
    path = first.save(tmp_path / "ckpt.pt")
    del first
    torch.manual_seed(12345)                # scramble the global RNG: resuming must restore it
    resumed = Trainer.from_checkpoint(path, images, labels, run=QUIET)
    assert resumed.step == 3 and resumed.cfg == train and resumed.objective.config == diffusion
    assert resumed.model.target == "v"
    resumed.train()

    assert resumed.step == straight.step == 6
    _assert_same_tensors(straight.model.state_dict(), resumed.model.state_dict(), "model")
    _assert_same_tensors(straight.ema.state_dict(), resumed.ema.state_dict(), "ema")
    for s, r in zip(straight.optimizer.state.values(), resumed.optimizer.state.values()):
        _assert_same_tensors(s, r, "optimizer state")
    assert torch.equal(straight.batches.get_state(), resumed.batches.get_state())


def test_resume_into_an_existing_trainer_and_weights_only_contents(tmp_path):
    images, labels = tiny_data()
    train, diffusion = _resume_configs()
    torch.manual_seed(0)
    trainer = Trainer(md.UNet(tiny_config()), images, labels, train, diffusion,
                      RunConfig(device="cpu", log_every=1, checkpoint_every=2, out_dir=str(tmp_path), progress=False))
    trainer.train(4)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)      # plain data only
    assert state["step"] == 4 and state["world_size"] == 1
    assert set(state) >= {"model", "ema", "optimizer", "rng", "config", "history"}
    assert state["config"]["model"]["kind"] == "unet" and state["config"]["model"]["config"]["base_channels"] == 8
    assert state["config"]["objective"] == {"kind": "diffusion", "config": vars(diffusion)}
    assert [s for s, _ in state["history"]["loss"]] == [1, 2, 3, 4]
    other = Trainer(md.UNet(tiny_config()), images, labels, train, diffusion, QUIET).resume(tmp_path / "checkpoint.pt")
    assert other.step == 4 and other.loss_history == trainer.loss_history
    _assert_same_tensors(trainer.ema.state_dict(), other.ema.state_dict(), "ema")


def test_save_model_and_load_trained(tmp_path):
    images, labels = tiny_data()
    torch.manual_seed(0)
    trainer = Trainer(md.UNet(tiny_config()), images, labels, TrainConfig(steps=2, batch_size=4), run=QUIET)
    trainer.train()
    trainer.save_model(tmp_path / "model.pt")
    model, schedule, diffusion = load_trained(tmp_path / "model.pt")
    assert not model.training and schedule.num_steps == 1000 and diffusion == trainer.objective.config
    assert model.target == "eps"
    _assert_same_tensors(model.state_dict(), trainer.ema.state_dict(), "ema")
    with pytest.raises(ValueError, match="resumable"):
        trainer.resume(tmp_path / "model.pt")


# -- the NaN guard ---------------------------------------------------------------------------------
class NaNAfter(md.UNet):
    """A U-Net whose output turns to NaN from its (k+1)-th training call on, like a diverging run."""

    def __init__(self, config, k):
        super().__init__(config)
        self.calls, self.k = 0, k

    def forward(self, x, t, y=None):
        self.calls += self.training
        out = super().forward(x, t, y)
        return out * float("nan") if self.calls > self.k else out


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    images, labels = tiny_data()
    torch.manual_seed(0)
    trainer = Trainer(NaNAfter(tiny_config(), k=5), images, labels, TrainConfig(steps=10, batch_size=4),
                      run=RunConfig(device="cpu", log_every=100, checkpoint_every=2, out_dir=str(tmp_path),
                                    progress=False))
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(NonFiniteLossError, match="at step 5") as err:
        trainer.train()
    assert f"{path} (step 4), is intact" in str(err.value)
    assert isinstance(err.value, FloatingPointError)
    state = load_checkpoint(path)
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert all(math.isfinite(loss) for _, loss in state["history"]["loss"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".minidiff.lock", "checkpoint.pt"]


def test_nan_before_any_checkpoint_says_so():
    images, labels = tiny_data()
    trainer = Trainer(NaNAfter(tiny_config(), k=0), images, labels, TrainConfig(steps=3, batch_size=4), run=QUIET)
    with pytest.raises(NonFiniteLossError, match="No checkpoint had been written yet"):
        trainer.train()


def test_max_seconds_stops_early():
    images, labels = tiny_data()
    trainer = Trainer(md.UNet(tiny_config()), images, labels, TrainConfig(steps=10_000, batch_size=4),
                      run=RunConfig(device="cpu", progress=False, max_seconds=0.3))
    trainer.train()
    assert 0 < trainer.step < 10_000 and trainer.loss_history[-1][0] == trainer.step


# -- several processes: DDP over gloo --------------------------------------------------------------
def test_ddp_two_processes_keep_identical_weights_and_resume_exactly(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(HERE / "ddp_train_script.py"), str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[0]["world_size"] == reports[1]["world_size"] == 2
    assert reports[0]["batch_seed"] != reports[1]["batch_seed"]            # ranks draw different batches
    assert reports[0]["straight"] == reports[1]["straight"]                # DDP kept the replicas equal
    assert reports[0]["straight"] == reports[0]["resumed"] == reports[1]["resumed"]
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["world_size"] == 2 and len(state["rng"]) == 2


def nan_gradient_at(model: md.UNet, step: int) -> md.UNet:
    """``model`` whose stem's gradient turns NaN at training step ``step``: that step's loss is finite,
    its gradient is not (issue 13's hook experiment)."""
    calls = {"n": 0}

    def hook(grad):
        calls["n"] += 1
        return grad * float("nan") if calls["n"] == step + 1 else grad

    model.stem.weight.register_hook(hook)
    return model


def test_nan_gradient_with_a_finite_loss_is_caught_and_never_saved(tmp_path):
    images, labels = tiny_data()
    torch.manual_seed(0)
    trainer = Trainer(nan_gradient_at(md.UNet(tiny_config()), step=8), images, labels,
                      TrainConfig(steps=10, batch_size=4),
                      run=RunConfig(device="cpu", log_every=100, checkpoint_every=5, out_dir=str(tmp_path),
                                    progress=False))
    with pytest.raises(NonFiniteLossError, match="at step 8") as err:
        trainer.train()
    assert "(step 5), is intact" in str(err.value)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 5
    for part in ("model", "ema"):
        assert all(torch.isfinite(v).all() for v in state[part].values() if v.is_floating_point()), part
    with pytest.raises(NonFiniteLossError):            # the weights in memory are NaN now: nothing is written
        trainer.save_model(tmp_path / "model.pt")
    assert not (tmp_path / "model.pt").exists()


def test_save_refuses_non_finite_weights(tmp_path):
    images, labels = tiny_data()
    trainer = Trainer(md.UNet(tiny_config()), images, labels, TrainConfig(steps=2, batch_size=4), run=QUIET)
    trainer.train()
    with torch.no_grad():
        next(trainer.ema.parameters()).view(-1)[0] = float("inf")
    with pytest.raises(NonFiniteLossError, match="EMA weights hold NaN or inf"):
        trainer.save_model(tmp_path / "model.pt")
    with pytest.raises(NonFiniteLossError, match="EMA"):
        trainer.save(tmp_path / "checkpoint.pt")
    assert list(tmp_path.iterdir()) == []


def test_resuming_below_the_saved_step_is_an_error(tmp_path):
    images, labels = tiny_data()
    trainer = Trainer(md.UNet(tiny_config()), images, labels, TrainConfig(steps=4, batch_size=4), run=QUIET)
    trainer.train()
    path = trainer.save(tmp_path / "c.pt")
    with pytest.raises(ValueError, match="at least the checkpoint's step 4"):
        Trainer.from_checkpoint(path, images, labels, run=QUIET, train=TrainConfig(steps=3, batch_size=4))
    with pytest.raises(ValueError, match="different model"):
        Trainer(md.UNet(tiny_config(num_classes=5)), images, labels, run=QUIET).resume(path)


def test_a_flipped_bit_in_a_saved_model_is_refused(tmp_path):
    images, labels = tiny_data()
    trainer = Trainer(md.UNet(tiny_config()), images, labels, TrainConfig(steps=2, batch_size=4), run=QUIET)
    trainer.train()
    path = trainer.save_model(tmp_path / "model.pt")
    state = torch.load(path, weights_only=True)
    key = next(k for k, v in state["weights"].items() if v.is_floating_point() and v.numel() > 1)
    state["weights"][key].view(torch.int32).view(-1)[0] ^= 1 << 30          # an exponent bit
    torch.save(state, path)                                                  # the stored checksum is now wrong
    with pytest.raises(CorruptCheckpointError, match="do not match the SHA-256"):
        load_trained(path)


# -- a run owns its folder -------------------------------------------------------------------------
def test_a_second_process_cannot_write_into_a_running_folder(tmp_path):
    """Two processes, one folder: the second is refused with the first's pid; after the first exits
    (its lock released) a new run may take the folder, and a dead owner's lock is taken over."""
    script = ("import sys, time, torch, minidiff as md\n"
              "cfg = md.UNetConfig(image_size=8, base_channels=8, channel_mults=(1, 2), blocks_per_level=1, "
              "attention_resolutions=(), num_classes=None, head_dim=8)\n"
              "run = md.RunConfig(device='cpu', out_dir=sys.argv[1], progress=False)\n"
              "md.Trainer(md.UNet(cfg), torch.zeros(4, 1, 8, 8), run=run)\n"
              "print('owner', flush=True)\n"
              "time.sleep(float(sys.argv[2]))\n")
    first = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), "30"], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "owner"
        second = subprocess.run([sys.executable, "-c", script, str(tmp_path), "0"], capture_output=True, text=True,
                                timeout=120)
        assert second.returncode != 0
        assert "RunFolderBusyError" in second.stderr and f"pid {first.pid}" in second.stderr
    finally:
        first.kill()
        first.wait()
    (tmp_path / ".checkpoint.pt.abc.tmp").write_bytes(b"half a save")      # what a killed save leaves
    third = subprocess.run([sys.executable, "-c", script, str(tmp_path), "0"], capture_output=True, text=True,
                           timeout=120)
    assert third.returncode == 0, third.stderr                               # the killed owner's lock is stale
    assert not (tmp_path / ".checkpoint.pt.abc.tmp").exists()
    assert not (tmp_path / ".minidiff.lock").exists()                        # released at exit


def test_same_process_may_reuse_its_folder(tmp_path):
    images, _ = tiny_data()
    run = RunConfig(device="cpu", out_dir=str(tmp_path), progress=False)
    Trainer(md.UNet(tiny_config(num_classes=None)), images, run=run)
    Trainer(md.UNet(tiny_config(num_classes=None)), images, run=run)         # a notebook re-running a cell


# -- any model, any objective ----------------------------------------------------------------------
def tiny_classifier_data(n=64):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, 28, 28, generator=g) * 2 - 1
    return images, torch.randint(0, 10, (n,), generator=g)


def test_the_classifier_trains_and_resumes_exactly_through_the_trainer(tmp_path):
    images, labels = tiny_classifier_data()
    train = TrainConfig(steps=6, batch_size=8, lr=3e-3, warmup_steps=2, weight_decay=5e-4, ema_decay=0.0,
                        ema_warmup=False, grad_clip=0.0, seed=1)
    objective = ClassificationObjective(ClassificationConfig())
    torch.manual_seed(0)
    straight = Trainer(md.DigitClassifier(), images, labels, train, objective, QUIET)
    straight.train()
    torch.manual_seed(0)
    first = Trainer(md.DigitClassifier(), images, labels, train, objective, QUIET)
    first.train(3)
    path = first.save(tmp_path / "c.pt")
    torch.manual_seed(999)
    resumed = Trainer.from_checkpoint(path, images, labels, run=QUIET)       # the objective is rebuilt from the file
    assert isinstance(resumed.objective, ClassificationObjective)
    resumed.train()
    _assert_same_tensors(straight.model.state_dict(), resumed.model.state_dict(), "model")
    _assert_same_tensors(straight.ema.state_dict(), resumed.ema.state_dict(), "ema")
    assert "accuracy" in straight.history and len(straight.history["accuracy"]) == 3


class TinyAutoencoder(torch.nn.Module):
    """A stand-in for notebook 08's autoencoder: 8×8 -> 4×4×2 -> 8×8."""

    def __init__(self):
        super().__init__()
        self.encode = torch.nn.Conv2d(1, 2, 3, stride=2, padding=1)
        self.decode = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2), torch.nn.Conv2d(2, 1, 3, padding=1))

    def forward(self, x):
        return self.decode(torch.nn.functional.dropout(self.encode(x), 0.1, self.training))


def reconstruction(model, batch):
    """An autoencoder objective: L1 reconstruction (a plain function, as the Trainer allows)."""
    x = batch[0]
    error = (model(x) - x).abs().mean()
    return error, {"l1": error.detach()}


def test_a_toy_autoencoder_objective_trains_and_resumes_exactly(tmp_path):
    images, _ = tiny_data(32)
    train = TrainConfig(steps=40, batch_size=8, lr=1e-2, warmup_steps=2, ema_decay=0.5, seed=2)
    torch.manual_seed(0)
    straight = Trainer(TinyAutoencoder(), images, train=train, objective=reconstruction,
                       run=RunConfig(device="cpu", log_every=10, progress=False))
    straight.train()
    assert straight.history["l1"][-1][1] < 0.9 * straight.history["l1"][0][1]       # it learns something
    torch.manual_seed(0)
    first = Trainer(TinyAutoencoder(), images, train=train, objective=reconstruction,
                    run=RunConfig(device="cpu", log_every=10, progress=False))
    first.train(20)
    path = first.save(tmp_path / "ae.pt")
    with pytest.raises(ValueError, match="objective of your own"):
        Trainer.from_checkpoint(path, images)
    second = Trainer(TinyAutoencoder(), images, train=train, objective=reconstruction,
                     run=RunConfig(device="cpu", log_every=10, progress=False)).resume(path)
    second.train()
    _assert_same_tensors(straight.model.state_dict(), second.model.state_dict(), "model")
    assert second.loss_history == straight.loss_history


def test_a_full_disk_names_the_last_good_checkpoint(tmp_path, monkeypatch):
    images, labels = tiny_data()
    trainer = Trainer(md.UNet(tiny_config()), images, labels, TrainConfig(steps=4, batch_size=4), run=QUIET)
    trainer.train(2)
    good = trainer.save(tmp_path / "c.pt")

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 128 vs 0")

    trainer.train()
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match=r"no space left on device while writing .*c\.pt.*\(step 2\), is intact"):
        trainer.save(good)
    monkeypatch.undo()
    assert load_checkpoint(good)["step"] == 2


def test_a_live_owners_lock_is_respected_in_process(tmp_path):
    (tmp_path / ".minidiff.lock").write_text(f"{os.getppid()}\n")          # the test runner's parent is alive
    images, _ = tiny_data()
    with pytest.raises(RunFolderBusyError, match=f"pid {os.getppid()}"):
        Trainer(md.UNet(tiny_config(num_classes=None)), images,
                run=RunConfig(device="cpu", out_dir=str(tmp_path), progress=False))


def test_a_recipe_with_snapshots_keeps_raw_and_ema_weights_and_ships_them_in_one_file(tmp_path, monkeypatch):
    """recipes.train_recipe keeps θ and θ_ema at each snapshot; ship_snapshots writes them into one file that
    pretrained.load_snapshots reads back (notebook 05's mnist_ema)."""
    from dataclasses import replace

    from minidiff import pretrained
    from minidiff.pretrained.recipes import RECIPES, make_trainer, ship_snapshots, train_recipe
    recipe = replace(RECIPES["tiny"], snapshots=(0.5, 1.0))
    trainer = make_trainer(recipe, QUIET, steps=4)
    kept = train_recipe(recipe, trainer)
    assert list(kept) == ["raw 2", "ema 2", "raw 4", "ema 4"] and trainer.step == 4
    _assert_same_tensors(kept["raw 4"], trainer.model.state_dict(), "raw")
    _assert_same_tensors(kept["ema 4"], trainer.ema.state_dict(), "ema")
    assert any(not torch.equal(kept["raw 2"][k], kept["raw 4"][k]) for k in kept["raw 2"])
    ship_snapshots("toy_snapshots", trainer, kept, {"by_snapshot": {}}, root=str(tmp_path))
    monkeypatch.setattr(pretrained, "CHECKPOINT_DIR", tmp_path)
    models, schedule, _ = pretrained.load_snapshots("toy_snapshots")
    assert list(models) == list(kept)
    for key, model in models.items():           # stored in float16
        for name, value in model.state_dict().items():
            torch.testing.assert_close(value, kept[key][name].half().float(), rtol=0, atol=0)


def test_a_trainer_leaves_the_global_rng_alone_and_its_own_stream_is_seeded():
    """Issue 36: building and training a Trainer draws from its own stream; the caller's global RNG is as it was."""
    images, labels = tiny_data()
    train, diffusion = _resume_configs()
    runs = []
    for outside_seed in (1, 2):
        torch.manual_seed(0)
        model = md.UNet(tiny_config(dropout=0.3))                # the same initial weights
        torch.manual_seed(outside_seed)
        before = torch.get_rng_state()
        trainer = Trainer(model, images, labels, train, diffusion, QUIET)
        trainer.train(2)
        assert torch.equal(torch.get_rng_state(), before)
        runs.append(trainer.model.state_dict())
    _assert_same_tensors(runs[0], runs[1], "model")        # the outside seed does not change what is learned


def test_images_in_0_255_are_refused():                                                              # issue 28, case 11
    images, labels = tiny_data()
    with pytest.raises(ValueError, match=r"images must be scaled to the model's range.*to_model_range"):
        Trainer(md.UNet(tiny_config()), (images + 1) * 127.5, labels, TrainConfig(steps=2, batch_size=4), run=QUIET)


def test_resume_refuses_a_trainconfig_that_contradicts_the_run(tmp_path):                            # issue 28, case 12
    images, labels = tiny_data()
    train, diffusion = _resume_configs()
    first = Trainer(md.UNet(tiny_config(dropout=0.3)), images, labels, train, diffusion, QUIET)
    first.train(2)
    path = first.save(tmp_path / "ckpt.pt")
    other = dataclasses.replace(train, batch_size=2, lr=5.0)
    with pytest.raises(ValueError, match=r"other settings than this trainer's TrainConfig: batch_size=8 there, 2 here, "
                                         r"lr=0.002 there, 5.0 here.*Trainer.from_checkpoint"):
        Trainer(md.UNet(tiny_config(dropout=0.3)), images, labels, other, diffusion, QUIET).resume(path)
    more = dataclasses.replace(train, steps=10)                 # more steps is not a contradiction
    assert Trainer(md.UNet(tiny_config(dropout=0.3)), images, labels, more, diffusion, QUIET).resume(path).step == 2
