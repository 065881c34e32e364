r"""Training: turn the diffusion loss into a trained denoiser. One loop, read top to bottom:

    for step in 0, 1, …, steps − 1:
        x_0, y ← a random batch of the dataset (already on the device; no DataLoader)
        t, ε   ← t ~ U{0, …, T−1}, ε ~ N(0, I);  labels dropped to the null class with p_uncond
        loss   = mean_b w(t_b) ‖f_θ(x_t, t_b, y_b) − target_b‖²               (losses.py)
        θ      ← AdamW(θ, ∇_θ loss), lr from ``lr_at``: linear warm-up, then cosine decay
        θ_ema  ← d θ_ema + (1 − d) θ                                              (``ema_update``)
        every few steps: log the loss, draw samples with θ_ema, write a checkpoint

The same code runs on a laptop CPU, one GPU, or several GPUs (``torchrun --nproc_per_node=N``):
under torchrun each process trains a replica wrapped in DistributedDataParallel, draws its own
batches, and gradients are averaged, so the effective batch is ``batch_size × N``. Only rank 0
writes files and draws the progress bar.

Resuming is exact: a checkpoint holds everything the next step depends on (weights, EMA, AdamW's
moments, the step, which fixes the learning rate, and every random-number-generator state), so
"train 3 steps, save, load, train 3 more" gives bit-for-bit the weights of "train 6 steps" on CPU.
"""
from __future__ import annotations

import copy
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .losses import TARGETS, WEIGHTINGS, Target, Weighting, drop_labels, per_sample_loss
from .nn.unet import UNet, UNetConfig, config_dict
from .samplers import ddim_sample
from .schedules import SCHEDULES, NoiseSchedule, make_schedule

SampleFn = Callable[[nn.Module, int], Tensor]      # (EMA model, step) -> images in [-1, 1]
NUM_T_BUCKETS = 10                                 # loss is also tracked per tenth of the t range
CHECKPOINT_FORMAT = "minidiff.train/1"
MODEL_FORMAT = "minidiff.model/1"
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


# -- configuration ---------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """The optimisation: how long, how large a batch, how fast, how smoothed."""
    steps: int = 10_000
    batch_size: int = 128            # per process; the effective batch is batch_size × world size
    lr: float = 2e-4                 # peak learning rate, reached at the end of warm-up
    min_lr: float = 0.0              # where the cosine decay ends, at ``steps``
    warmup_steps: int = 500
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    ema_warmup: bool = True          # decay min(d, (1 + step) / (10 + step)): early EMA follows θ
    grad_clip: float = 1.0           # max global gradient norm; 0 turns clipping off
    seed: int = 0

    def __post_init__(self) -> None:
        _check_positive(self, "steps", "batch_size", "lr")
        _check_non_negative(self, "min_lr", "warmup_steps", "weight_decay", "grad_clip")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1); got {self.ema_decay}")


@dataclass
class DiffusionConfig:
    """What the network learns: the noise schedule, the prediction target, the loss weighting."""
    schedule: str = "linear"         # "linear", "cosine" or "sigmoid" (make_schedule)
    num_steps: int = 1000            # T
    target: Target = "eps"           # the network predicts ε, x_0 or v
    weighting: Weighting = None      # None, "p2" or "min_snr" (losses.loss_weight)
    p_uncond: float = 0.0            # label drop rate for classifier-free guidance

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}; got {self.schedule!r}")
        _check_positive(self, "num_steps")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}; got {self.target!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}; got {self.weighting!r}")
        if not 0.0 <= self.p_uncond <= 1.0:
            raise ValueError(f"p_uncond must be in [0, 1]; got {self.p_uncond}")

    def make_schedule(self, device: Union[str, torch.device] = "cpu") -> NoiseSchedule:
        return make_schedule(self.schedule, self.num_steps).to(device)


@dataclass
class RunConfig:
    """Where and how fast to run, and what to write. None of it changes what is learned."""
    device: Optional[str] = None     # None: "cuda" when available, else "cpu"
    bf16: bool = True                # bfloat16 autocast (CUDA only; the CPU trains in float32)
    compile: Union[bool, str] = False    # torch.compile: True, or a mode ("reduce-overhead": CUDA graphs)
    cuda_graph: bool = False         # record forward + backward once, replay them (no compilation)
    channels_last: bool = False      # NHWC memory layout, faster convolutions on tensor cores
    log_every: int = 100             # steps between loss logs (the only GPU → CPU syncs)
    sample_every: int = 0            # steps between sample grids (0: never)
    checkpoint_every: int = 0        # steps between checkpoints (0: never)
    out_dir: Optional[str] = None    # checkpoint.pt and samples/ go here
    progress: Optional[bool] = None  # tqdm bar; None: on a terminal or in a notebook, not in logs
    max_seconds: Optional[float] = None  # stop a ``train()`` call after this wall time

    def __post_init__(self) -> None:
        _check_positive(self, "log_every")
        _check_non_negative(self, "sample_every", "checkpoint_every")
        if not isinstance(self.compile, bool) and self.compile not in COMPILE_MODES:
            raise ValueError(f"compile must be True, False or one of {COMPILE_MODES}; got {self.compile!r}")
        if self.cuda_graph and self.compile:
            raise ValueError(f"cuda_graph and compile are alternatives: choose one; got cuda_graph=True and "
                             f"compile={self.compile!r} (compile='reduce-overhead' also uses CUDA graphs)")
        if self.checkpoint_every and self.out_dir is None:
            raise ValueError("checkpoint_every > 0 needs out_dir (the folder for checkpoint.pt); got out_dir=None")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"max_seconds must be None or > 0; got {self.max_seconds}")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; training stopped before saving the bad weights."""


# -- the pieces of a step, as plain functions ------------------------------------------------------
def lr_at(step: int, cfg: TrainConfig) -> float:
    r"""Learning rate of step ``step`` (0-indexed): linear warm-up to ``lr`` over ``warmup_steps``,
    then a half cosine down to ``min_lr`` at ``steps``:
    $\eta = \eta_{min} + \tfrac12(\eta - \eta_{min})(1 + \cos \pi p)$, $p$ = fraction of the decay done."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps      # step 0 already learns a little
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


def ema_decay_at(step: int, cfg: TrainConfig) -> float:
    """The EMA decay of step ``step``: ``ema_decay``, or with warm-up min(d, (1 + step) / (10 + step)),
    so that the average does not remember the random initial weights for thousands of steps."""
    return min(cfg.ema_decay, (1 + step) / (10 + step)) if cfg.ema_warmup else cfg.ema_decay


@torch.no_grad()
def ema_update(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    r"""$\theta_{ema} \leftarrow d\,\theta_{ema} + (1 - d)\,\theta$ for every parameter; buffers are copied."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be in [0, 1]; got {decay}")
    # lerp(a, b, w) = a + w (b − a) = (1 − w) a + w b, with w = 1 − d; one fused call for all tensors
    torch._foreach_lerp_(list(ema_model.parameters()), list(model.parameters()), 1.0 - decay)
    for ema_buffer, buffer in zip(ema_model.buffers(), model.buffers()):
        ema_buffer.copy_(buffer)


def setup_distributed(device: Optional[str] = None) -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun (WORLD_SIZE > 1) this joins the process group:
    NCCL with one GPU per process on CUDA, gloo on CPU. A single process gets (0, 1, device)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def rng_state(device: torch.device, batches: torch.Generator) -> dict:
    """Every random-number-generator state that training reads, as tensors (weights_only-safe)."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {"torch": torch.get_rng_state(), "cuda": cuda, "batches": batches.get_state()}


def set_rng_state(state: dict, device: torch.device, batches: torch.Generator) -> None:
    """Undo ``rng_state``: the global CPU (and CUDA) generators and the batch generator."""
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    batches.set_state(state["batches"])


# -- the trainer --------------------------------------------------------------------------------------
class Trainer:
    r"""Trains ``model`` on ``images`` (N, C, H, W) in [-1, 1], with optional int64 ``labels`` (N,).

    The whole dataset is moved to the device once; batches are drawn by indexing it with a seeded
    generator. ``train()`` runs the loop; ``save()`` / ``resume()`` / ``from_checkpoint()`` checkpoint
    it. ``loss_history`` holds (step, mean loss since the last log); ``bucket_history`` holds
    (step, mean loss in each tenth of the t range); ``samples`` holds (step, images) from ``sample_fn``.
    """

    def __init__(self, model: nn.Module, images: Tensor, labels: Optional[Tensor] = None,
                 train: Optional[TrainConfig] = None, diffusion: Optional[DiffusionConfig] = None,
                 run: Optional[RunConfig] = None, sample_fn: Optional[SampleFn] = None):
        train, diffusion, run = train or TrainConfig(), diffusion or DiffusionConfig(), run or RunConfig()
        _check_data(images, labels, model, diffusion)
        self.cfg, self.diffusion, self.run, self.sample_fn = train, diffusion, run, sample_fn
        self.rank, self.world_size, self.device = setup_distributed(run.device)
        # t, ε, dropout and label drops come from the global generator: seeded per rank, so ranks differ
        torch.manual_seed(train.seed + self.rank)
        self.batches = torch.Generator(self.device).manual_seed(train.seed + self.rank)
        self.images, self.labels = _to_device(images, labels, self.device, run.channels_last)
        self.schedule = diffusion.make_schedule(self.device)
        self._setup_model(model)
        self.step = 0
        self.loss_history: list[tuple[int, float]] = []
        self.bucket_history: list[tuple[int, list[float]]] = []
        self.samples: list[tuple[int, Tensor]] = []
        self.checkpoint_path = Path(run.out_dir) / "checkpoint.pt" if run.out_dir else None
        self.last_good: Optional[tuple[Path, int]] = None        # (path, step) of the newest save
        self._reset_window()

    def _setup_model(self, model: nn.Module) -> None:
        cuda = self.device.type == "cuda"
        memory_format = torch.channels_last if self.run.channels_last else torch.preserve_format
        self.model = model.to(self.device, memory_format=memory_format).train()
        # ``net`` is what the step calls: the model, maybe wrapped by DDP and compiled. DDP copies
        # rank 0's weights to every rank here, so the EMA copy below starts equal on all ranks.
        self.net = DistributedDataParallel(self.model, device_ids=[self.device] if cuda else None) \
            if self.world_size > 1 else self.model
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.cfg.lr,
                                           weight_decay=self.cfg.weight_decay, fused=cuda)
        # a recorded graph replays its kernels, so autocast must not reuse casts cached across steps
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cuda and self.run.bf16,
                                       cache_enabled=not self.run.cuda_graph)
        if self.run.compile:
            self.net = torch.compile(self.net, mode=None if self.run.compile is True else self.run.compile)
        if self.run.cuda_graph:
            self.net = self._graphed(self.model)

    def _graphed(self, model: nn.Module) -> nn.Module:
        """``model`` with its forward and backward recorded as CUDA graphs (``make_graphed_callables``).

        A small U-Net on 28×28 images spends most of an eager step launching ~2,000 tiny kernels; a
        replayed graph launches them all at once. Shapes are frozen at the batch size, so every batch
        must have ``batch_size`` images. Called after the EMA copy is made: the copy stays eager."""
        if self.device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs a CUDA device; got device {self.device}")
        if self.world_size > 1:
            raise ValueError(f"cuda_graph=True runs in one process; got world size {self.world_size}")
        batch = self.cfg.batch_size
        memory_format = torch.channels_last if self.run.channels_last else torch.contiguous_format
        x = torch.zeros(batch, *self.images.shape[1:], device=self.device).contiguous(memory_format=memory_format)
        t = torch.zeros(batch, dtype=torch.long, device=self.device)
        y = None if self.labels is None else torch.zeros(batch, dtype=torch.long, device=self.device)
        with self.autocast:                 # recorded as it will run: in bf16 where enabled
            return torch.cuda.make_graphed_callables(model, (x, t) if y is None else (x, t, y))

    # -- one step ----------------------------------------------------------------------------------
    def next_batch(self) -> tuple[Tensor, Optional[Tensor]]:
        """B images (and labels, some dropped to the null class) drawn with replacement."""
        index = torch.randint(0, self.images.shape[0], (self.cfg.batch_size,), device=self.device,
                              generator=self.batches)
        if self.labels is None:
            return self.images[index], None
        y = self.labels[index]
        if self.diffusion.p_uncond > 0:
            y = drop_labels(y, self.diffusion.p_uncond, _num_classes(self.model))
        return self.images[index], y

    def train_step(self) -> Tensor:
        """One optimisation step; returns the batch loss as a 0-d tensor (no GPU sync)."""
        x0, y = self.next_batch()
        t = torch.randint(0, self.schedule.num_steps, (x0.shape[0],), device=self.device)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, self.cfg)
        with self.autocast:
            losses = per_sample_loss(self.net, x0, t, self.schedule, self.diffusion.target,
                                     self.diffusion.weighting, y)
        loss = losses.mean()
        loss.backward()
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        ema_update(self.ema, self.model, ema_decay_at(self.step, self.cfg))
        self._record(loss, losses, t)
        self.step += 1
        return loss

    # -- the loop --------------------------------------------------------------------------------------
    def train(self, steps: Optional[int] = None) -> list[tuple[int, float]]:
        """Run ``steps`` more steps (default: up to ``TrainConfig.steps``), or until ``max_seconds``.
        Logs, samples and checkpoints on their schedules. Returns ``loss_history``."""
        end = self.cfg.steps if steps is None else min(self.step + steps, self.cfg.steps)
        start = time.monotonic()
        show = self.rank == 0 and _show_progress(self.run.progress)
        with tqdm(total=self.cfg.steps, initial=self.step, disable=not show, desc="train") as bar:
            while self.step < end and not self._out_of_time(start):
                self.train_step()
                bar.update()
                if self._every(self.run.log_every):
                    bar.set_postfix(loss=f"{self._flush_log():.4f}")
                if self._every(self.run.sample_every):
                    self.sample()
                if self._every(self.run.checkpoint_every):
                    self.save()
            self._flush_log()
        return self.loss_history

    def sample(self) -> Optional[Tensor]:
        """Call ``sample_fn`` with the EMA model (rank 0 only); keep the images and save a grid."""
        if self.sample_fn is None or self.rank != 0:
            return None
        with torch.no_grad():
            images = self.sample_fn(self.ema, self.step).detach().float().cpu()
        self.samples.append((self.step, images))
        if self.run.out_dir is not None:
            save_grid(images, Path(self.run.out_dir) / "samples" / f"step_{self.step:07d}.png")
        return images

    # -- checkpoints -----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resumed run needs, as plain data. In DDP call it on every rank (it gathers)."""
        rng = rng_state(self.device, self.batches)
        return {"format": CHECKPOINT_FORMAT, "step": self.step, "world_size": self.world_size,
                "model": self.model.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "rng": _gather(rng, self.world_size),          # one entry per rank
                "config": {"model": _model_config(self.model), "train": asdict(self.cfg),
                           "diffusion": asdict(self.diffusion)},
                "history": {"loss": list(self.loss_history), "t_buckets": list(self.bucket_history)}}

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict()``: weights, EMA, optimizer, step, histories and RNG states."""
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]
        self.loss_history = [tuple(item) for item in state["history"]["loss"]]
        self.bucket_history = [tuple(item) for item in state["history"]["t_buckets"]]
        if state["world_size"] == self.world_size:
            set_rng_state(state["rng"][self.rank], self.device, self.batches)
        else:   # a different number of processes cannot replay the same batches; start fresh streams
            torch.manual_seed(self.cfg.seed + self.rank + self.step)
            self.batches.manual_seed(self.cfg.seed + self.rank + self.step)

    def save(self, path: Union[str, os.PathLike, None] = None) -> Path:
        """Write a checkpoint atomically (default ``out_dir/checkpoint.pt``); rank 0 writes, every
        rank must call. The loss is checked first, so a non-finite loss never reaches the disk."""
        path = Path(path) if path is not None else self.checkpoint_path
        if path is None:
            raise ValueError("save() needs a path, or RunConfig.out_dir for the default checkpoint.pt")
        self._flush_log()
        state = self.state_dict()
        if self.rank == 0:
            save_checkpoint(path, state)
        self.last_good = (path, self.step)
        return path

    def save_model(self, path: Union[str, os.PathLike]) -> Path:
        """Write the EMA weights and the configs only (for sampling and shipping, not resuming)."""
        state = {"format": MODEL_FORMAT, "step": self.step, "ema": self.ema.state_dict(),
                 "config": {"model": _model_config(self.model), "diffusion": asdict(self.diffusion)},
                 "history": {"loss": list(self.loss_history)}}
        if self.rank == 0:
            save_checkpoint(path, state)
        return Path(path)

    def resume(self, path: Union[str, os.PathLike]) -> "Trainer":
        """Load a checkpoint written by ``save()`` into this trainer; training goes on exactly."""
        state = load_checkpoint(path)
        _check_format(state, path, CHECKPOINT_FORMAT)
        self.load_state_dict(state)
        self.last_good = (Path(path), self.step)
        return self

    @classmethod
    def from_checkpoint(cls, path: Union[str, os.PathLike], images: Tensor, labels: Optional[Tensor] = None,
                        run: Optional[RunConfig] = None, sample_fn: Optional[SampleFn] = None,
                        train: Optional[TrainConfig] = None) -> "Trainer":
        """A trainer rebuilt from a checkpoint's configs (``train`` overrides the saved TrainConfig,
        e.g. for more steps), with its state loaded: ``.train()`` continues the run."""
        state = load_checkpoint(path)
        _check_format(state, path, CHECKPOINT_FORMAT)
        config = state["config"]
        train = TrainConfig(**config["train"]) if train is None else train
        trainer = cls(model_from_config(config["model"]), images, labels, train,
                      DiffusionConfig(**config["diffusion"]), run, sample_fn)
        trainer.load_state_dict(state)
        trainer.last_good = (Path(path), trainer.step)
        return trainer

    # -- bookkeeping: losses stay on the device until a log step --------------------------------------
    def _reset_window(self) -> None:
        self._window: list[Tensor] = []
        self._buckets = torch.zeros(2, NUM_T_BUCKETS, device=self.device)   # rows: loss sum, count

    def _record(self, loss: Tensor, losses: Tensor, t: Tensor) -> None:
        self._window.append(loss.detach().float())
        bucket = t * NUM_T_BUCKETS // self.schedule.num_steps
        self._buckets[0].index_add_(0, bucket, losses.detach().float())
        self._buckets[1].index_add_(0, bucket, torch.ones_like(losses, dtype=torch.float))

    def _flush_log(self) -> Optional[float]:
        """Move the losses since the last log to the CPU (one sync), check them, append the means."""
        if not self._window:
            return None
        losses, buckets = torch.stack(self._window), self._buckets
        if self.world_size > 1:         # every rank sees the same numbers, so all stop together
            dist.all_reduce(losses)
            dist.all_reduce(buckets)
            losses = losses / self.world_size
        losses, buckets = losses.cpu(), buckets.cpu()
        self._raise_if_not_finite(losses)
        self.loss_history.append((self.step, losses.mean().item()))
        self.bucket_history.append((self.step, (buckets[0] / buckets[1]).tolist()))   # nan: empty bucket
        self._reset_window()
        return self.loss_history[-1][1]

    def _raise_if_not_finite(self, losses: Tensor) -> None:
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad) == 0:
            return
        step = self.step - len(losses) + int(bad[0])
        saved = (f"The last good checkpoint, {self.last_good[0]} (step {self.last_good[1]}), is intact."
                 if self.last_good else "No checkpoint had been written yet.")
        raise NonFiniteLossError(f"the training loss is {losses[bad[0]].item()} at step {step}; training "
                                 f"stopped and the weights after it were not saved. {saved} Try a lower lr, "
                                 f"grad_clip > 0, or check the data for NaN.")

    def _every(self, n: int) -> bool:
        return n > 0 and self.step % n == 0

    def _out_of_time(self, start: float) -> bool:
        """Has ``max_seconds`` passed? With several ranks they agree on it at log steps only."""
        if self.run.max_seconds is None:
            return False
        out = time.monotonic() - start >= self.run.max_seconds
        if self.world_size == 1:
            return out
        if self.step % self.run.log_every:
            return False
        flag = torch.tensor(float(out), device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


# -- samples ---------------------------------------------------------------------------------------
def ddim_sample_fn(schedule: NoiseSchedule, shape: tuple[int, ...], labels: Optional[Tensor] = None,
                   steps: int = 50, guidance_scale: Optional[float] = None, target: Target = "eps",
                   seed: int = 0) -> SampleFn:
    """A ``sample_fn`` for the Trainer: DDIM from the same seeded noise every time, so successive
    grids show the same samples improving. Its own generator leaves the training RNG untouched.
    It runs on the device of the model it is given."""
    def sample(model: nn.Module, step: int) -> Tensor:
        device = next(model.parameters()).device
        s = schedule if schedule.device == device else schedule.to(device)
        y = labels.to(device) if labels is not None else None
        return ddim_sample(model, s, shape, steps=steps, y=y, guidance_scale=guidance_scale, target=target,
                           generator=torch.Generator(device).manual_seed(seed))
    return sample


def save_grid(images: Tensor, path: Union[str, os.PathLike], nrow: Optional[int] = None) -> Path:
    """Save a batch in [-1, 1] as one PNG grid (parent folders created)."""
    from .viz import png_bytes          # matplotlib and widgets load only when a grid is drawn
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(images, nrow=nrow, zoom=2))
    return path


def load_trained(path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu",
                 weights: str = "ema") -> tuple[nn.Module, NoiseSchedule, DiffusionConfig]:
    """(model in eval mode, schedule, DiffusionConfig) from a checkpoint or a ``save_model`` file.
    ``weights`` = "ema" (the averaged weights, what to sample with) or "model" (checkpoints only)."""
    state = load_checkpoint(path)
    if state.get("format") not in (CHECKPOINT_FORMAT, MODEL_FORMAT):
        raise ValueError(f"{path} is not a minidiff training checkpoint or model file "
                         f"(format {state.get('format')!r})")
    if weights not in state:
        raise ValueError(f"weights must be one of {[k for k in ('ema', 'model') if k in state]} for {path}; "
                         f"got {weights!r}")
    model = model_from_config(state["config"]["model"])
    model.load_state_dict(state[weights])
    diffusion = DiffusionConfig(**state["config"]["diffusion"])
    return model.to(device).eval().requires_grad_(False), diffusion.make_schedule(device), diffusion


def model_from_config(config: Optional[dict]) -> UNet:
    """A fresh UNet from ``config_dict(UNetConfig)`` (lists back to tuples)."""
    if not isinstance(config, dict):
        raise ValueError("this checkpoint holds no UNet config (the model was not a minidiff UNet); build the "
                         "model yourself, then use Trainer(model, ...).resume(path)")
    return UNet(UNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}))


# -- helpers ---------------------------------------------------------------------------------------
def _check_positive(cfg: object, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{type(cfg).__name__}.{name} must be > 0; got {getattr(cfg, name)}")


def _check_non_negative(cfg: object, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) < 0:
            raise ValueError(f"{type(cfg).__name__}.{name} must be >= 0; got {getattr(cfg, name)}")


def _show_progress(progress: Optional[bool]) -> bool:
    """None means: a bar on a terminal or in a notebook, none in a log file."""
    return progress if progress is not None else sys.stderr.isatty() or "ipykernel" in sys.modules


def _num_classes(model: nn.Module) -> Optional[int]:
    """The model's ``config.num_classes`` (None: unconditional); also the null-class label."""
    return getattr(getattr(model, "config", None), "num_classes", None)


def _check_data(images: Tensor, labels: Optional[Tensor], model: nn.Module, diffusion: DiffusionConfig) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise TypeError(f"images must be a float tensor (N, C, H, W) in [-1, 1]; got "
                        f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}")
    if labels is not None and (not isinstance(labels, Tensor) or labels.dtype != torch.long
                               or labels.shape != (images.shape[0],)):
        raise TypeError(f"labels must be None or an int64 tensor of shape ({images.shape[0]},); got "
                        f"{getattr(labels, 'dtype', type(labels).__name__)} {tuple(getattr(labels, 'shape', ()))}")
    if labels is not None and _num_classes(model) is None:
        raise ValueError("labels were given but the model is unconditional (config.num_classes is None)")
    if diffusion.p_uncond > 0 and labels is None:
        raise ValueError(f"p_uncond = {diffusion.p_uncond} drops labels for guidance, but no labels were given")


def _to_device(images: Tensor, labels: Optional[Tensor], device: torch.device,
               channels_last: bool) -> tuple[Tensor, Optional[Tensor]]:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    images = images.to(device).contiguous(memory_format=memory_format)
    return images, labels.to(device) if labels is not None else None


def _model_config(model: nn.Module) -> Optional[dict]:
    config = getattr(model, "config", None)
    return config_dict(config) if isinstance(config, UNetConfig) else None


def _gather(rng: dict, world_size: int) -> list[dict]:
    """Every rank's RNG state, in rank order (only rank 0 writes, but each rank resumes its own)."""
    if world_size == 1:
        return [rng]
    states: list = [None] * world_size
    dist.all_gather_object(states, {k: v.cpu() if v is not None else None for k, v in rng.items()})
    return states


def _check_format(state: dict, path: Union[str, os.PathLike], expected: str) -> None:
    if state.get("format") != expected:
        raise ValueError(f"{path} is not a resumable training checkpoint: format {state.get('format')!r}, "
                         f"expected {expected!r} (a save_model file holds EMA weights only)")
