r"""Command line: train a recipe, or sample from a trained model.

    python -m minidiff train --recipe mnist_cond --out runs/mnist_cond [--device cuda] [--steps N]
    python -m minidiff train --recipe mnist_cond --out runs/mnist_cond --resume runs/mnist_cond/checkpoint.pt
    python -m minidiff sample --checkpoint runs/mnist_cond/model.pt --n 64 --label 3 --out grid.png
    python -m minidiff sample --checkpoint mnist_cond --sampler dpm++ --steps 20 --out grid.png   # the shipped model
    torchrun --nproc_per_node=8 -m minidiff train --recipe mnist_cond --out runs/ddp   # several GPUs

``train`` writes ``OUT/checkpoint.pt`` (resumable: weights, EMA, optimizer, RNG states) every few
steps and at the end, plus ``OUT/model.pt`` (EMA weights and configs only, for sampling).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.distributed as dist

from . import pretrained
from .recipes import RECIPES, make_trainer
from .samplers import SAMPLERS, sample
from .train import COMPILE_MODES, RunConfig, Trainer, load_trained, save_grid

CLASSIFIER = "classifier"          # trained by minidiff.metrics, not by the diffusion Trainer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m minidiff", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    add_train_arguments(commands.add_parser("train", help="train a named recipe"))
    add_sample_arguments(commands.add_parser("sample", help="draw a grid of samples from a trained model"))
    return parser


def add_train_arguments(train: argparse.ArgumentParser) -> None:
    train.add_argument("--recipe", required=True, choices=sorted(RECIPES) + [CLASSIFIER],
                       help="a recipe of minidiff.recipes, or the metrics' digit classifier")
    train.add_argument("--out", default=None, help="output folder (default: runs/RECIPE; for the classifier, "
                                                   "the package's checkpoints)")
    train.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    train.add_argument("--steps", type=int, default=None, help="override the recipe's number of steps")
    train.add_argument("--max-seconds", type=float, default=None, help="stop after this wall time")
    train.add_argument("--resume", default=None, metavar="PATH", help="continue from this checkpoint")
    train.add_argument("--compile", nargs="?", const=True, default=False, choices=[True, *COMPILE_MODES],
                       metavar="MODE", help="torch.compile the model; MODE reduce-overhead adds CUDA graphs "
                                            "(fastest for small models on a GPU)")
    train.add_argument("--cuda-graph", action="store_true", help="record the network's forward and backward "
                                                                  "as CUDA graphs: fast steps without compiling")
    train.add_argument("--channels-last", action="store_true", help="NHWC memory layout")
    train.add_argument("--fp32", action="store_true", help="no bfloat16 autocast on CUDA")
    train.set_defaults(func=train_command)


def add_sample_arguments(sample: argparse.ArgumentParser) -> None:
    sample.add_argument("--checkpoint", required=True,
                        help="a checkpoint.pt or model.pt from `train`, or a shipped model's name (mnist_cond)")
    sample.add_argument("--out", default="samples.png", help="PNG file for the grid")
    sample.add_argument("--n", type=int, default=64, help="number of samples")
    sample.add_argument("--label", type=int, default=None, help="class of every sample (default: 0, 1, 2, …)")
    sample.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    sample.add_argument("--sampler", choices=SAMPLERS, default="ddim",
                        help="ddim (default), dpm++ (DPM-Solver++ 2M) or ddpm (all T steps; --steps is ignored)")
    sample.add_argument("--steps", type=int, default=50, help="network calls for ddim and dpm++")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    sample.set_defaults(func=sample_command)


def train_command(args: argparse.Namespace) -> int:
    if args.recipe == CLASSIFIER:
        return train_classifier(args.out, args.device)
    out = Path(args.out or Path("runs") / args.recipe)
    recipe = RECIPES[args.recipe]
    run = RunConfig(device=args.device, bf16=not args.fp32, compile=args.compile, cuda_graph=args.cuda_graph,
                    channels_last=args.channels_last,
                    log_every=recipe.log_every, sample_every=recipe.sample.every,
                    checkpoint_every=recipe.checkpoint_every, out_dir=str(out),
                    max_seconds=args.max_seconds or recipe.max_seconds)
    trainer = make_trainer(recipe, run, steps=args.steps, resume=args.resume)
    trainer.train()
    trainer.save()
    trainer.save_model(out / "model.pt")
    if trainer.rank == 0:
        print(f"step {trainer.step}: loss {trainer.loss_history[-1][1]:.4f}; wrote {out / 'checkpoint.pt'} "
              f"and {out / 'model.pt'}")
        print_metrics(trainer, recipe.sample.eval_samples, recipe.sample.guidance_scale, recipe.sample.steps)
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def train_classifier(out: Optional[str], device: Optional[str]) -> int:
    """The metrics' digit classifier has its own recipe, in minidiff.metrics (default folder: the
    package's shipped checkpoints, which it reproduces)."""
    try:
        from .metrics import classifier_recipe
    except ImportError as err:
        raise SystemExit(f"--recipe {CLASSIFIER} needs minidiff.metrics.classifier_recipe: {err}")
    print(classifier_recipe(out_dir=out, device=device))
    return 0


def print_metrics(trainer: Trainer, n: int, guidance_scale: Optional[float], steps: int) -> None:
    """Sample ``n`` images (classes in turn) with the EMA model and print minidiff.metrics.evaluate."""
    if n <= 0:
        return
    try:
        from .metrics import evaluate
    except ImportError:
        print("metrics: minidiff.metrics is not available; skipped")
        return
    num_classes = trainer.model.config.num_classes
    labels = torch.arange(n, device=trainer.device) % num_classes if num_classes else None
    images = draw(trainer.ema, trainer.schedule, n, labels, guidance_scale if num_classes else None, steps,
                  trainer.diffusion.target, seed=0)
    metrics = evaluate(images.cpu(), labels.cpu() if labels is not None else None)
    print("metrics: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))


def draw(model: torch.nn.Module, schedule, n: int, labels: Optional[torch.Tensor], guidance_scale: Optional[float],
         steps: int, target: str, seed: int, sampler: str = "ddim") -> torch.Tensor:
    """``n`` samples from ``model`` in [-1, 1], reproducible from ``seed``, batched to bound memory."""
    cfg, device = model.config, schedule.device
    generator = torch.Generator(device).manual_seed(seed)
    batches = []
    for start in range(0, n, 500):
        y = labels[start:start + 500] if labels is not None else None
        shape = (min(500, n - start), cfg.in_channels, cfg.image_size, cfg.image_size)
        batches.append(sample(sampler, model, schedule, shape, steps, y, guidance_scale, target, generator))
    return torch.cat(batches).clamp(-1, 1)         # the last x̂_0 can overshoot the data range


def sample_command(args: argparse.Namespace) -> int:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.n < 1:
        raise SystemExit(f"--n must be >= 1; got {args.n}")
    model, schedule, diffusion = load_for_sampling(args.checkpoint, device)
    num_classes = model.config.num_classes
    labels = sample_labels(args.n, args.label, num_classes)
    labels = labels.to(device) if labels is not None else None
    images = draw(model, schedule, args.n, labels, args.guidance if labels is not None else None, args.steps,
                  diffusion.target, args.seed, args.sampler)
    path = save_grid(images, args.out, nrow=num_classes if args.label is None and num_classes else None)
    print(f"wrote {args.n} samples to {path}")
    return 0


def load_for_sampling(checkpoint: str, device: torch.device) -> tuple:
    """(model, schedule, DiffusionConfig) from a checkpoint file, or from the shipped model of that name
    when no such file exists (its target, e.g. v, comes with it)."""
    shipped = {name for name, entry in pretrained.manifest().items() if "diffusion" in entry["config"]}
    if checkpoint in shipped and not Path(checkpoint).exists():
        return pretrained.load_diffusion(checkpoint, device)
    return load_trained(checkpoint, device)


def sample_labels(n: int, label: Optional[int], num_classes: Optional[int]) -> Optional[torch.Tensor]:
    """``label`` n times, or classes 0, 1, 2, … in turn; None for an unconditional model."""
    if label is not None and num_classes is None:
        raise SystemExit("--label needs a class-conditional model; this one is unconditional")
    if label is not None and not 0 <= label < num_classes:
        raise SystemExit(f"--label must be in [0, {num_classes}) for this model; got {label}")
    if num_classes is None:
        return None
    return torch.full((n,), label) if label is not None else torch.arange(n) % num_classes


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
