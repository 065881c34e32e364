r"""Training: one loop for any model and any objective, read top to bottom:

    for step in 0, 1, …, steps − 1:
        batch  ← random rows of the data (already on the device; no DataLoader)
        loss   = objective(model, batch)       the diffusion loss, a classifier's cross-entropy, …
        θ      ← AdamW(θ, clip(∇_θ loss)), lr from ``lr_at``: linear warm-up, then cosine decay
        θ_ema  ← d θ_ema + (1 − d) θ                                              (``ema_update``)
        every few steps: log, draw samples with θ_ema, write a checkpoint

The objective (``minidiff.objectives``) is everything that depends on what is trained; the Trainer
only optimises. The same code runs on a laptop CPU, one GPU, or several GPUs (``torchrun
--nproc_per_node=N``): under torchrun each process trains a replica wrapped in
DistributedDataParallel, draws its own batches, and gradients are averaged, so the effective batch is
``batch_size × N``. Only rank 0 writes files and draws the progress bar.

Nothing is lost. Resuming is exact: a checkpoint holds everything the next step depends on (weights,
EMA, AdamW's moments, the step, which fixes the learning rate, and every random-number-generator
state), so "train 3 steps, save, load, train 3 more" gives bit-for-bit the weights of "train 6
steps" on CPU. A NaN or infinite loss or gradient stops training at the next log or save, before
anything is written, so the last checkpoint on disk is always a finite one. A run owns its
``out_dir``: a second process writing there is refused (``RunFolderBusyError``).
"""
from __future__ import annotations

import atexit
import contextlib
import copy
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .checkpoint import TRAIN_FORMAT, load_checkpoint, save_checkpoint
from .images import check_batch, save_grid
from .objectives import Batch, DiffusionConfig, Objective, as_objective, objective_from_description
from .progress import show_progress
from .registry import build, describe, save_model
from .schedules import NoiseSchedule

SampleFn = Callable[[nn.Module, int], Tensor]      # (EMA model, step) -> images in [-1, 1]
CHECKPOINT_FORMAT = TRAIN_FORMAT
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
LOCK_FILE = ".minidiff.lock"

__all__ = ["TrainConfig", "RunConfig", "DiffusionConfig", "Trainer", "NonFiniteLossError", "RunFolderBusyError",
           "lr_at", "ema_decay_at", "ema_update"]


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
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be None or > 0 (a wall time in seconds); got {self.max_seconds}")


class NonFiniteLossError(FloatingPointError):
    """The loss or the gradient became NaN or infinite; training stopped before saving the bad weights."""


class RunFolderBusyError(RuntimeError):
    """Another live process is training into the same ``out_dir``."""


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


def fresh_stream(seed: int, device: torch.device) -> dict:
    """The states {"torch", "cuda"} that the global CPU (and CUDA) generators would have after
    ``torch.manual_seed(seed)``, made on the side: the global generators are not touched."""
    cuda = torch.Generator(device).manual_seed(seed).get_state() if device.type == "cuda" else None
    return {"torch": torch.Generator().manual_seed(seed).get_state(), "cuda": cuda}


def global_stream(device: torch.device) -> dict:
    """The global CPU (and CUDA) generators' states now."""
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_global_stream(stream: dict, device: torch.device) -> None:
    """Put ``stream`` into the global CPU (and CUDA) generators."""
    torch.set_rng_state(stream["torch"])
    if device.type == "cuda" and stream["cuda"] is not None:
        torch.cuda.set_rng_state(stream["cuda"], device)


# -- the trainer --------------------------------------------------------------------------------------
class Trainer:
    r"""Trains ``model`` on ``images`` (N, …) with optional ``labels`` (N,) or (N, K) by minimising ``objective``.

    ``objective``: a function (model, batch) -> (loss, logs) (``minidiff.objectives``), or a
    DiffusionConfig for the diffusion loss (the default). The whole dataset is moved to the device
    once; batches are drawn by indexing it with a seeded generator. ``train()`` runs the loop;
    ``save()`` / ``resume()`` / ``from_checkpoint()`` checkpoint it. ``history`` holds, for the loss and
    every logged figure, (step, mean since the previous log); ``loss_history`` is ``history["loss"]``;
    ``samples`` holds (step, images) from ``sample_fn``.
    """

    def __init__(self, model: nn.Module, images: Tensor, labels: Optional[Tensor] = None,
                 train: Optional[TrainConfig] = None, objective: Union[Objective, DiffusionConfig, None] = None,
                 run: Optional[RunConfig] = None, sample_fn: Optional[SampleFn] = None):
        self.cfg, self.run, self.sample_fn = train or TrainConfig(), run or RunConfig(), sample_fn
        _check_data(images, labels)
        self.rank, self.world_size, self.device = setup_distributed(self.run.device)
        self.objective = as_objective(objective)
        self.objective = self.objective.to(self.device) if hasattr(self.objective, "to") else self.objective
        self.schedule: Optional[NoiseSchedule] = getattr(self.objective, "schedule", None)
        if hasattr(self.objective, "prepare"):
            self.objective.prepare(model, (images,) if labels is None else (images, labels))
        # dropout, t, ε and augmentation come from the global generators (dropout has no generator argument), so
        # the Trainer keeps its own stream for them, seeded per rank, and swaps it in only while it trains
        self.stream, self._training = fresh_stream(self.cfg.seed + self.rank, self.device), False
        self.batches = torch.Generator(self.device).manual_seed(self.cfg.seed + self.rank)
        self.data = _to_device(images, labels, self.device, self.run.channels_last)
        self.out_dir = Path(self.run.out_dir) if self.run.out_dir else None
        if self.out_dir is not None and self.rank == 0:
            own_folder(self.out_dir)
        self._setup_model(model)
        self.step = 0
        self.history: dict[str, list[tuple[int, object]]] = {"loss": []}
        self.samples: list[tuple[int, Tensor]] = []
        self.last_good: Optional[tuple[Path, int]] = None        # (path, step) of the newest save
        self.monitor = Monitor(self.device, self.world_size)

    def close(self) -> None:
        """Give up ``out_dir`` (its lock) now rather than when the process exits."""
        if self.out_dir is not None and self.rank == 0:
            _release(self.out_dir / LOCK_FILE, os.getpid())

    @property
    def loss_history(self) -> list[tuple[int, float]]:
        return self.history["loss"]

    @property
    def checkpoint_path(self) -> Optional[Path]:
        return self.out_dir / "checkpoint.pt" if self.out_dir is not None else None

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
            first_rows = torch.zeros(self.cfg.batch_size, dtype=torch.long, device=self.device)   # no random draws
            self.net = graphed(self.model, self.objective, tuple(part[first_rows] for part in self.data),
                               self.autocast, self.world_size)

    # -- one step ----------------------------------------------------------------------------------
    def next_batch(self) -> Batch:
        """``batch_size`` rows of the data (images, and labels if any), drawn with replacement."""
        index = torch.randint(0, self.data[0].shape[0], (self.cfg.batch_size,), device=self.device,
                              generator=self.batches)
        return tuple(part[index] for part in self.data)

    def train_step(self) -> Tensor:
        """One optimisation step; returns the batch loss as a 0-d tensor (no GPU sync)."""
        batch = self.next_batch()
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, self.cfg)
        with self.autocast:
            loss, logs = self.objective(self.net, batch)
        loss.backward()
        # the gradient norm is taken in any case: it tells a NaN gradient behind a finite loss
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip or math.inf)
        self.monitor.watch(self.step, loss, grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        ema_update(self.ema, self.model, ema_decay_at(self.step, self.cfg))
        self.monitor.add({"loss": loss, **logs})
        self.step += 1
        return loss

    # -- the loop --------------------------------------------------------------------------------------
    def train(self, steps: Optional[int] = None) -> list[tuple[int, float]]:
        """Run ``steps`` more steps (default: up to ``TrainConfig.steps``), or until ``max_seconds``.
        Logs, samples and checkpoints on their schedules. Returns ``loss_history``."""
        end = self.cfg.steps if steps is None else min(self.step + steps, self.cfg.steps)
        start = time.monotonic()
        show = self.rank == 0 and show_progress(self.run.progress)
        with self.own_stream(), tqdm(total=self.cfg.steps, initial=self.step, disable=not show, desc="train") as bar:
            while self.step < end and not out_of_time(start, self.run, self.step, self.world_size, self.device):
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

    @contextlib.contextmanager
    def own_stream(self) -> Iterator[None]:
        """Run the block with the Trainer's random stream in the global generators, and give the caller's back
        after it: training never changes the random numbers the rest of a program draws."""
        if self._training:                   # already inside
            yield
            return
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            set_global_stream(self.stream, self.device)
            self._training = True
            try:
                yield
            finally:
                self.stream, self._training = global_stream(self.device), False

    def sample(self) -> Optional[Tensor]:
        """Call ``sample_fn`` with the EMA model (rank 0 only; every rank must call); keep the images and
        save a grid."""
        if self.sample_fn is None:
            return None
        self._flush_log()                   # no samples from weights that went non-finite (all ranks agree)
        if self.rank != 0:
            return None
        with torch.no_grad():
            images = self.sample_fn(self.ema, self.step).detach().float().cpu()
        self.samples.append((self.step, images))
        if self.out_dir is not None:
            # an early model's samples overshoot [-1, 1] by far: the grid shows them clamped
            save_grid(images.clamp(-1, 1), self.out_dir / "samples" / f"step_{self.step:07d}.png")
        return images

    # -- checkpoints -----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resumed run needs, as plain data. In DDP call it on every rank (it gathers)."""
        stream = global_stream(self.device) if self._training else self.stream
        rng = {**stream, "batches": self.batches.get_state()}
        objective = self.objective.describe() if hasattr(self.objective, "describe") else None
        return {"format": CHECKPOINT_FORMAT, "step": self.step, "world_size": self.world_size,
                "model": self.model.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "rng": _gather(rng, self.world_size),          # one entry per rank
                "config": {"model": _describe(self.model), "train": asdict(self.cfg), "objective": objective},
                "history": {key: list(values) for key, values in self.history.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict()``: weights, EMA, optimizer, step, histories and RNG states."""
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]
        self.history = {key: [tuple(item) for item in values] for key, values in state["history"].items()}
        if state["world_size"] == self.world_size:
            rng = state["rng"][self.rank]
            self.stream = {"torch": rng["torch"], "cuda": rng["cuda"]}
            self.batches.set_state(rng["batches"])
        else:   # a different number of processes cannot replay the same batches; start fresh streams
            self.stream = fresh_stream(self.cfg.seed + self.rank + self.step, self.device)
            self.batches.manual_seed(self.cfg.seed + self.rank + self.step)
        if self._training:
            set_global_stream(self.stream, self.device)

    def save(self, path: Union[str, os.PathLike, None] = None) -> Path:
        """Write a checkpoint atomically (default ``out_dir/checkpoint.pt``); rank 0 writes, every
        rank must call. Losses, gradients and weights are checked first: nothing non-finite is written."""
        path = Path(path) if path is not None else self.checkpoint_path
        if path is None:
            raise ValueError("save() needs a path, or RunConfig.out_dir for the default checkpoint.pt")
        self._flush_log()
        self._check_weights()
        state = self.state_dict()
        if self.rank == 0:
            self._write(lambda: save_checkpoint(path, state), path)
        self.last_good = (path, self.step)
        return path

    def save_model(self, path: Union[str, os.PathLike]) -> Path:
        """Write the EMA weights and the configs only (for sampling and shipping, not resuming)."""
        self._flush_log()
        self._check_weights()
        objective = self.objective.describe() if hasattr(self.objective, "describe") else None
        if self.rank == 0:
            self._write(lambda: save_model(path, self.ema, objective=objective, step=self.step,
                                           history={"loss": list(self.loss_history)}), Path(path))
        return Path(path)

    def resume(self, path: Union[str, os.PathLike]) -> "Trainer":
        """Load a checkpoint written by ``save()`` into this trainer; training goes on exactly."""
        state = load_checkpoint(path)
        _check_format(state, path)
        if state["config"]["model"] != _describe(self.model):
            raise ValueError(f"{path} holds a different model ({state['config']['model']}) than this trainer's "
                             f"({_describe(self.model)}); use Trainer.from_checkpoint to rebuild the saved one")
        saved, given = state["config"]["train"], asdict(self.cfg)
        differ = {k: (saved[k], given[k]) for k in saved if k != "steps" and k in given and saved[k] != given[k]}
        if differ:       # the run would silently go on with other settings than it was trained with
            raise ValueError(f"{path} was trained with other settings than this trainer's TrainConfig: "
                             + ", ".join(f"{k}={v[0]!r} there, {v[1]!r} here" for k, v in differ.items())
                             + "; resume with the run's own (Trainer.from_checkpoint restores them), or pass "
                               "the same TrainConfig")
        self.load_state_dict(state)
        self.last_good = (Path(path), self.step)
        return self

    @classmethod
    def from_checkpoint(cls, path: Union[str, os.PathLike], images: Tensor, labels: Optional[Tensor] = None,
                        run: Optional[RunConfig] = None, sample_fn: Optional[SampleFn] = None,
                        train: Optional[TrainConfig] = None, objective: Optional[Objective] = None) -> "Trainer":
        """A trainer rebuilt from a checkpoint's model, TrainConfig and objective, with its state loaded:
        ``.train()`` continues the run. ``train`` overrides the saved TrainConfig (e.g. for more steps;
        fewer steps than already trained is an error); ``objective`` is needed when the run's was a
        function of your own."""
        state = load_checkpoint(path)
        _check_format(state, path)
        config = state["config"]
        train = TrainConfig(**config["train"]) if train is None else train
        if train.steps < state["step"]:
            raise ValueError(f"train.steps must be at least the checkpoint's step {state['step']} to continue "
                             f"the run; got {train.steps} (nothing would be trained)")
        if objective is None:
            if config["objective"] is None:
                raise ValueError(f"{path} was trained with an objective of your own: pass objective= to resume it")
            objective = objective_from_description(config["objective"])
        model = _build(config["model"], path)
        trainer = cls(model, images, labels, train, objective, run, sample_fn)
        trainer.load_state_dict(state)
        trainer.last_good = (Path(path), trainer.step)
        return trainer

    def _write(self, write: Callable[[], None], path: Path) -> None:
        try:
            write()
        except OSError as err:
            raise type(err)(err.errno, f"{err.strerror or err}; {self._last_good_text()}") from err

    # -- bookkeeping: figures stay on the device until a log step ---------------------------------------
    def _flush_log(self) -> Optional[float]:
        """Move the figures since the last log to the CPU (one sync), check them, append the means."""
        means, first_bad = self.monitor.flush()
        if means is None:
            return None
        if first_bad >= 0:
            raise NonFiniteLossError(f"the loss or its gradient was not finite at step {first_bad} (mean loss "
                                     f"since the last log: {means['loss']}); training stopped and the weights "
                                     f"after it were not saved. {self._last_good_text()} Try a lower lr, "
                                     f"grad_clip > 0, or check the data for NaN.")
        for key, mean in means.items():
            self.history.setdefault(key, []).append((self.step, mean))
        return self.loss_history[-1][1]

    def _check_weights(self) -> None:
        """Refuse to save weights or EMA weights that hold NaN or inf (the step guard would have said why)."""
        for name, module in (("model", self.model), ("EMA", self.ema)):
            if not all_finite(module):
                raise NonFiniteLossError(f"the {name} weights hold NaN or inf at step {self.step}; they were not "
                                         f"saved. {self._last_good_text()}")

    def _last_good_text(self) -> str:
        if self.last_good is None:
            return "No checkpoint had been written yet."
        return f"The last good checkpoint, {self.last_good[0]} (step {self.last_good[1]}), is intact."

    def _every(self, n: int) -> bool:
        return n > 0 and self.step % n == 0


def graphed(model: nn.Module, objective: Objective, batch: Batch, autocast: torch.autocast,
            world_size: int = 1) -> nn.Module:
    """``model`` with its forward and backward recorded as CUDA graphs (``make_graphed_callables``).

    A small U-Net on 28×28 images spends most of an eager step launching ~2,000 tiny kernels; a
    replayed graph launches them all at once. Shapes are frozen at the batch size, so every batch
    must have that many images. The Trainer calls it after making the EMA copy: the copy stays eager."""
    device = next(model.parameters()).device
    if device.type != "cuda":
        raise ValueError(f"cuda_graph=True needs a CUDA device; got device {device}")
    if world_size > 1:
        raise ValueError(f"cuda_graph=True runs in one process; got world size {world_size}")
    if not hasattr(objective, "example_inputs"):
        raise ValueError("cuda_graph=True needs objective.example_inputs(batch), the arguments of one forward call")
    with autocast:                      # recorded as it will run: in bf16 where enabled
        return torch.cuda.make_graphed_callables(model, objective.example_inputs(batch))


def out_of_time(start: float, run: RunConfig, step: int, world_size: int, device: torch.device) -> bool:
    """Has ``run.max_seconds`` passed since ``start``? With several ranks they agree on it at log steps only."""
    if run.max_seconds is None:
        return False
    out = time.monotonic() - start >= run.max_seconds
    if world_size == 1:
        return out
    if step % run.log_every:
        return False
    flag = torch.tensor(float(out), device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


# -- what the loop watches -------------------------------------------------------------------------
class Monitor:
    """The figures of the steps since the last log, summed on the device (no GPU → CPU sync per step),
    and the first step whose loss or gradient norm was not finite."""

    def __init__(self, device: torch.device, world_size: int = 1):
        self.device, self.world_size = device, world_size
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.steps = 0
        self.first_bad = torch.full((), -1, dtype=torch.long, device=self.device)

    def watch(self, step: int, loss: Tensor, grad_norm: Tensor) -> None:
        bad = ~(torch.isfinite(loss.detach()) & torch.isfinite(grad_norm))
        self.first_bad = torch.where(bad & (self.first_bad < 0), step, self.first_bad)

    def add(self, figures: dict[str, Tensor]) -> None:
        for key, value in figures.items():
            value = value.detach().float()
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.steps += 1

    def flush(self) -> tuple[Optional[dict[str, Union[float, list]]], int]:
        """(the mean of each figure since the last flush, or None if no step was taken; the first
        non-finite step, or −1), averaged over every rank; then start a new window."""
        if not self.steps:
            return None, -1
        keys, first_bad = sorted(self.sums), self.first_bad
        if self.world_size > 1:         # every rank sees the same numbers, so all stop together
            for key in keys:
                dist.all_reduce(self.sums[key])
            dist.all_reduce(first_bad, op=dist.ReduceOp.MAX)
        means = {k: (self.sums[k] / (self.steps * self.world_size)).cpu() for k in keys}
        self._reset()
        return {k: v.item() if v.ndim == 0 else v.tolist() for k, v in means.items()}, int(first_bad)


def all_finite(module: nn.Module) -> bool:
    """Whether every parameter of ``module`` is finite (one sync)."""
    norms = torch._foreach_norm([p.detach().float() for p in module.parameters()])
    return bool(torch.isfinite(torch.stack(norms)).all()) if norms else True


# -- a run owns its folder -------------------------------------------------------------------------
def own_folder(out_dir: Path) -> None:
    """Take ``out_dir`` for this process: write its pid to ``out_dir/.minidiff.lock``, released at exit.
    A lock held by another live process is a RunFolderBusyError; one left by a dead process is taken over,
    and temporary files a killed save left behind are removed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = out_dir / LOCK_FILE
    owner = _lock_owner(lock)
    if owner is not None and owner != os.getpid() and _alive(owner):
        raise RunFolderBusyError(f"{out_dir} is in use by another training run (pid {owner}); choose another "
                                 f"out_dir (--out), or wait for it to finish (if no such process runs, delete {lock})")
    lock.write_text(f"{os.getpid()}\n")
    for stale in out_dir.glob(".*.pt.*.tmp"):        # left by a save that was killed halfway
        stale.unlink(missing_ok=True)
    atexit.register(_release, lock, os.getpid())


def _lock_owner(lock: Path) -> Optional[int]:
    try:
        return int(lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _release(lock: Path, pid: int) -> None:
    if _lock_owner(lock) == pid:
        lock.unlink(missing_ok=True)


# -- helpers ---------------------------------------------------------------------------------------
def _check_positive(cfg: object, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{type(cfg).__name__}.{name} must be > 0; got {value!r}")


def _check_non_negative(cfg: object, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{type(cfg).__name__}.{name} must be >= 0; got {value!r}")


def _show_progress(progress: Optional[bool]) -> bool:
    """None means: a bar on a terminal or in a notebook, none in a log file."""
    return progress if progress is not None else sys.stderr.isatty() or "ipykernel" in sys.modules


MAX_ABS_VALUE = 20.0          # images in [-1, 1] and unit-variance latents stay far below it; pixels in [0, 255] do not


def _check_data(images: Tensor, labels: Optional[Tensor]) -> None:
    check_batch(images, "images", channels=None)
    if images.numel() and float(images.detach().abs().amax()) > MAX_ABS_VALUE:
        raise ValueError(f"images must be scaled to the model's range, [-1, 1] (or unit-variance latents); got "
                         f"values from {float(images.amin()):.4g} to {float(images.amax()):.4g}, which look like "
                         f"pixels in [0, 255]: use minidiff.to_model_range(images) first")
    if labels is not None and (not isinstance(labels, Tensor) or labels.dtype != torch.long
                               or labels.ndim not in (1, 2) or labels.shape[0] != images.shape[0]):
        raise TypeError(f"labels must be None or an int64 tensor of shape ({images.shape[0]},), or "
                        f"({images.shape[0]}, K) for K attributes; got "
                        f"{getattr(labels, 'dtype', type(labels).__name__)} {tuple(getattr(labels, 'shape', ()))}")


def _to_device(images: Tensor, labels: Optional[Tensor], device: torch.device, channels_last: bool) -> Batch:
    memory_format = torch.channels_last if channels_last and images.ndim == 4 else torch.contiguous_format
    images = images.to(device).contiguous(memory_format=memory_format)
    return (images,) if labels is None else (images, labels.to(device))


def _describe(model: nn.Module) -> Optional[dict]:
    """The registry's description of ``model``, or None for a network of an unregistered kind."""
    try:
        return describe(model)
    except ValueError:
        return None


def _build(description: Optional[dict], path: Union[str, os.PathLike]) -> nn.Module:
    if description is None:
        raise ValueError(f"{path} holds a model of a kind minidiff.registry does not know; build the model "
                         f"yourself, then use Trainer(model, ...).resume(path)")
    return build(description)


def _gather(rng: dict, world_size: int) -> list[dict]:
    """Every rank's RNG state, in rank order (only rank 0 writes, but each rank resumes its own)."""
    if world_size == 1:
        return [rng]
    states: list = [None] * world_size
    dist.all_gather_object(states, {k: v.cpu() if v is not None else None for k, v in rng.items()})
    return states


def _check_format(state: dict, path: Union[str, os.PathLike]) -> None:
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a resumable training checkpoint: format {state.get('format')!r}, "
                         f"expected {CHECKPOINT_FORMAT!r} (a model file holds EMA weights only)")
