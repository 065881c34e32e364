r"""Recipes: named training runs, written down as data so that a shipped checkpoint can be remade.

    python -m minidiff train --recipe mnist_cond          # reproduces checkpoints/mnist_cond
    python -m minidiff train --recipe tiny --out /tmp/t   # seconds on a CPU: every code path, no quality

A recipe fixes the data, the network, the diffusion and the optimisation. Where it runs (device,
compile, bf16, output folder) is not part of it: that is ``RunConfig``, chosen on the command line.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import torch
from torch import Tensor

from .nn.unet import UNet, UNetConfig
from .train import DiffusionConfig, RunConfig, SampleFn, TrainConfig, Trainer, ddim_sample_fn


@dataclass
class SampleConfig:
    """How a recipe draws samples (DDIM, classes 0, 1, 2, … in turn): grids while training, metrics after."""
    every: int = 0                             # steps between grids in out_dir/samples (0: none)
    n: int = 64                                # images per grid
    steps: int = 50                            # DDIM steps
    guidance_scale: Optional[float] = None     # classifier-free guidance (conditional models)
    eval_samples: int = 0                      # samples scored by minidiff.metrics after training (0: none)


@dataclass
class Recipe:
    """One reproducible run. ``max_seconds`` trains for a fixed wall time instead of all ``steps``
    (the learning-rate schedule still spans ``train.steps``)."""
    data: str                                  # a name in DATASETS
    model: UNetConfig
    diffusion: DiffusionConfig
    train: TrainConfig
    sample: SampleConfig = field(default_factory=SampleConfig)
    max_seconds: Optional[float] = None
    log_every: int = 100
    checkpoint_every: int = 1000


RECIPES: dict[str, Recipe] = {
    # Class-conditional digits with classifier-free guidance (labels dropped 10% of the time).
    # Size: 1.74 M parameters (widths 32-64-64), chosen for a learner's CPU as much as for the GPU.
    # It draws 64 digits in 20 DDIM steps in ~3.2 s on 2 cores (goal ≤ 10 s). A 4.1 M variant
    # (32-64-128, batch 512) measured no better on an H100 (benchmarks/RESULTS.md).
    # Target v: with ε the deterministic samplers (DDIM, DPM-Solver++) levelled off at 1.16× the FD of
    # DDPM-1000; with v they match it (1.02×), at the same cost. 6,106 steps are 2 minutes on an H200
    # with CUDA graphs (`benchmarks/quality_vs_time.py --cuda-graph --budget 120` fitted them).
    "mnist_cond": Recipe(
        data="mnist",
        model=UNetConfig(image_size=28, in_channels=1, base_channels=32, channel_mults=(1, 2, 2),
                         blocks_per_level=2, attention_resolutions=(7,), dropout=0.1, num_classes=10,
                         head_dim=32),
        diffusion=DiffusionConfig(schedule="linear", num_steps=1000, target="v", p_uncond=0.1),
        train=TrainConfig(steps=6106, batch_size=256, lr=1e-3, min_lr=1e-5, warmup_steps=300,
                          ema_decay=0.999, grad_clip=1.0, seed=0),
        sample=SampleConfig(every=0, n=100, steps=50, guidance_scale=None, eval_samples=1000),
        checkpoint_every=4000),
    # The smallest run that still goes through every code path: for tests and smoke checks.
    "tiny": Recipe(
        data="mnist",
        model=UNetConfig(image_size=28, in_channels=1, base_channels=8, channel_mults=(1, 2, 2),
                         blocks_per_level=1, attention_resolutions=(7,), dropout=0.1, num_classes=10,
                         head_dim=8),
        diffusion=DiffusionConfig(p_uncond=0.1),
        train=TrainConfig(steps=20, batch_size=16, lr=1e-3, warmup_steps=5, ema_decay=0.9, seed=0),
        sample=SampleConfig(every=10, n=10, steps=5, guidance_scale=2.0),
        log_every=5, checkpoint_every=10),
}


def _mnist() -> tuple[Tensor, Tensor]:
    from .data import mnist            # imported on use: only the recipes that need it pay for it
    digits = mnist("train")
    return digits.images, digits.labels


DATASETS: dict[str, Callable[[], tuple[Tensor, Optional[Tensor]]]] = {"mnist": _mnist}


def load_data(name: str) -> tuple[Tensor, Optional[Tensor]]:
    """(images (N, C, H, W) in [-1, 1], labels (N,) or None) of the dataset called ``name``."""
    if name not in DATASETS:
        raise ValueError(f"data must be one of {sorted(DATASETS)}; got {name!r}")
    return DATASETS[name]()


def make_trainer(recipe: Recipe, run: RunConfig, steps: Optional[int] = None,
                 resume: Optional[str] = None) -> Trainer:
    """A Trainer for ``recipe`` (data loaded, weights seeded), or continuing the checkpoint ``resume``.
    ``steps`` overrides the recipe's step count; ``run`` decides where and how fast."""
    images, labels = load_data(recipe.data)
    train = replace(recipe.train, steps=steps) if steps is not None else recipe.train
    sample_fn = recipe_sample_fn(recipe) if recipe.sample.every else None
    if resume is not None:
        return Trainer.from_checkpoint(resume, images, labels, run, sample_fn,
                                       train if steps is not None else None)
    torch.manual_seed(train.seed)          # the initial weights are part of the recipe
    return Trainer(UNet(recipe.model), images, labels, train, recipe.diffusion, run, sample_fn)


def recipe_sample_fn(recipe: Recipe) -> SampleFn:
    """The Trainer's ``sample_fn`` for ``recipe``: a grid of ``recipe.sample.n`` DDIM samples."""
    cfg, sample = recipe.model, recipe.sample
    labels = torch.arange(sample.n) % cfg.num_classes if cfg.num_classes else None
    shape = (sample.n, cfg.in_channels, cfg.image_size, cfg.image_size)
    return ddim_sample_fn(recipe.diffusion.make_schedule(), shape, labels, steps=sample.steps,
                          guidance_scale=sample.guidance_scale if labels is not None else None,
                          target=recipe.diffusion.target)
