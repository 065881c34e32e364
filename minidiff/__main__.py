r"""Command line: train a recipe, or sample from a trained model.

    python -m minidiff train --recipe mnist_cond --out runs/mnist_cond [--device cuda] [--steps N]
    python -m minidiff train --recipe mnist_cond --out runs/mnist_cond --resume runs/mnist_cond/checkpoint.pt
    python -m minidiff train --recipe classifier --out runs/classifier      # the metrics' digit classifier
    python -m minidiff sample --checkpoint runs/mnist_cond/model.pt --n 64 --label 3 --out grid.png
    python -m minidiff sample --checkpoint mnist_cond --sampler dpm++ --steps 20 --out grid.png   # the shipped model
    torchrun --nproc_per_node=8 -m minidiff train --recipe mnist_cond --out runs/ddp   # several GPUs

``train`` writes ``OUT/checkpoint.pt`` (resumable: weights, EMA, optimizer, RNG states) every few
steps and at the end, plus ``OUT/model.pt`` (EMA weights and configs only, for sampling); with
``--ship DIR`` it also writes the EMA weights and their measured metrics into a checkpoints folder.
A folder that already holds a run is continued (``--resume``) or replaced (``--overwrite``), never
silently; ``sample`` never writes its grid over a checkpoint, and every file is replaced atomically.
A mistake on the command line ends in one line on stderr that says what was wrong, and exit code 2.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.distributed as dist

from . import pretrained
from .checkpoint import TRAIN_FORMAT, DiskFullError, FileSizeLimitError, load_checkpoint
from .flow import FlowPath, flow_sample
from .guidance import check_scale, labels_in_turn
from .images import image_format, save_grid
from .pretrained.recipes import (
    RECIPES,
    evaluate_recipe,
    evaluate_snapshots,
    finish,
    make_trainer,
    ship,
    ship_snapshots,
    train_recipe,
)
from .registry import MODEL_FORMAT
from .samplers import SAMPLERS, sample
from .train import COMPILE_MODES, NonFiniteLossError, RunConfig, RunFolderBusyError

# CorruptCheckpointError, UnsafeCheckpointError and ChecksumError are ValueErrors; FileNotFoundError,
# PermissionError and DiskFullError are OSErrors
USER_ERRORS = (ValueError, TypeError, OSError, RunFolderBusyError, NonFiniteLossError)


class UsageError(ValueError):
    """A command-line argument that cannot work; the message says which and why."""


MAX_SAMPLES = 1024          # one grid image (32 × 32 tiles); draw more from Python, in batches
SAMPLE_BATCH = 256          # images per sampler call: memory stays bounded for any --n
SATURATED = 1.5             # |x| beyond this is far outside the model's range [-1, 1]
NUMBER_FLAGS = ("--guidance",)   # flags whose value may start with "-" (-1e6, -inf)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m minidiff", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    add_train_arguments(commands.add_parser("train", help="train a named recipe"))
    add_sample_arguments(commands.add_parser("sample", help="draw a grid of samples from a trained model"))
    return parser


def add_train_arguments(train: argparse.ArgumentParser) -> None:
    train.add_argument("--recipe", required=True, choices=sorted(RECIPES),
                       help="a recipe of minidiff.pretrained.recipes")
    train.add_argument("--out", default=None, help="output folder (default: runs/RECIPE)")
    train.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    train.add_argument("--steps", type=int, default=None, help="override the recipe's number of steps")
    train.add_argument("--max-seconds", type=float, default=None, help="stop after this wall time (> 0)")
    train.add_argument("--resume", default=None, metavar="PATH", help="continue from this checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace the run that --out already holds "
                                                               "(without it, such a folder is refused)")
    train.add_argument("--ship", default=None, metavar="DIR", help="also write the EMA weights and metrics "
                                                                   "into the checkpoints folder DIR (manifest.json)")
    train.add_argument("--compile", nargs="?", const=True, default=False, choices=[True, *COMPILE_MODES],
                       metavar="MODE", help="torch.compile the model; MODE reduce-overhead adds CUDA graphs "
                                            "(fastest for small models on a GPU)")
    train.add_argument("--cuda-graph", action="store_true", help="record the network's forward and backward "
                                                                  "as CUDA graphs: fast steps without compiling")
    train.add_argument("--channels-last", action="store_true", help="NHWC memory layout")
    train.add_argument("--fp32", action="store_true", help="no bfloat16 autocast on CUDA")
    train.set_defaults(func=train_command)


def add_sample_arguments(sample_parser: argparse.ArgumentParser) -> None:
    sample_parser.add_argument("--checkpoint", required=True,
                               help="a checkpoint.pt or model.pt from `train`, or a shipped model's name (mnist_cond)")
    sample_parser.add_argument("--out", default="samples.png", help="PNG or JPEG file for the grid (by its extension)")
    sample_parser.add_argument("--n", type=int, default=64, help=f"number of samples (at most {MAX_SAMPLES})")
    sample_parser.add_argument("--label", type=int, default=None, help="class of every sample (default: 0, 1, 2, …)")
    sample_parser.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale w "
                                                                          "(0: unconditional, 1: conditional)")
    sample_parser.add_argument("--sampler", choices=SAMPLERS + FLOW_SOLVERS, default=None,
                               help="a diffusion model: ddim (default), dpm++ (DPM-Solver++ 2M) or ddpm (all T steps; "
                                    "--steps is ignored); a flow model (mnist_flow): euler (default) or heun")
    sample_parser.add_argument("--steps", type=int, default=50, help="network calls for ddim and dpm++")
    sample_parser.add_argument("--seed", type=int, default=0, help="seed of the noise, in [0, 2**64)")
    sample_parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    sample_parser.set_defaults(func=sample_command)


# -- checks made before any work ------------------------------------------------------------------
def pick_device(name: Optional[str]) -> str:
    """``name`` if this machine has it ("cpu", "cuda", "cuda:N"), else a UsageError saying what there is."""
    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device must be cpu or cuda[:N]; got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device must be cpu or cuda[:N]; got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: this machine has no CUDA GPU that PyTorch can use; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: there are {torch.cuda.device_count()} CUDA devices (0 to "
                         f"{torch.cuda.device_count() - 1})")
    return name


def check_writable_folder(path: Path, flag: str) -> None:
    """``path`` is a folder this process can create or write into (checked before training starts)."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file; it must be a folder")
    _probe(next(p for p in [path, *path.parents] if p.exists()), flag, path)


def check_writable_file(path: Path, flag: str) -> None:
    """``path`` is a file this process can write (checked before sampling starts)."""
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give a file name such as {path / 'samples.png'}")
    _probe(next(p for p in path.absolute().parents if p.exists()), flag, path)


def _probe(folder: Path, flag: str, path: Path) -> None:
    """Create and remove a file in ``folder``: the one sure test that the output can be written there."""
    if not folder.is_dir():
        raise UsageError(f"{flag} {path}: {folder} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise UsageError(f"{flag} {path} is not writable ({folder}: {err.strerror or err})") from None


def check_count(value: Optional[int], flag: str, minimum: int = 1, maximum: Optional[int] = None,
                why: str = "") -> None:
    if value is not None and value < minimum:
        raise UsageError(f"{flag} must be >= {minimum}; got {value}")
    if value is not None and maximum is not None and value > maximum:
        raise UsageError(f"{flag} must be <= {maximum:,}{why}; got {value:,}")


def check_new_run(out: Path, args: argparse.Namespace) -> None:
    """A folder that already holds a run is continued with --resume or replaced with --overwrite, never
    overwritten by a fresh run without a word."""
    held = [name for name in ("checkpoint.pt", "model.pt") if (out / name).is_file()]
    if held and args.resume is None and not args.overwrite:
        raise UsageError(f"--out {out} already holds a run ({', '.join(held)}): continue it with --resume "
                         f"{out / 'checkpoint.pt'} (and --steps above its step), or pass --overwrite to replace it")


def check_resume_file(path: Path) -> None:
    """``path`` is a training checkpoint (Trainer.save), not a model file or another kind of file."""
    if not path.is_file():
        raise UsageError(f"--resume {path}: no such checkpoint file")
    kind = load_checkpoint(path).get("format")
    if kind == MODEL_FORMAT:
        raise UsageError(f"--resume {path} is a model file (EMA weights for sampling), not a training "
                         f"checkpoint: resume from the checkpoint.pt that the run wrote beside it "
                         f"({path.parent / 'checkpoint.pt'})")
    if kind != TRAIN_FORMAT:
        raise UsageError(f"--resume {path} is not a minidiff training checkpoint (format {kind!r}, expected "
                         f"{TRAIN_FORMAT!r})")


def check_sample_out(out: Path, checkpoint: str) -> None:
    """The grid never replaces the checkpoint being read nor any other checkpoint, and its format is known."""
    if Path(checkpoint).is_file() and out.exists() and out.resolve() == Path(checkpoint).resolve():
        raise UsageError(f"--out {out} is the --checkpoint file being read; the grid would overwrite it: give "
                         f"an image file name such as samples.png")
    if out.is_file() and _is_torch_file(out):
        raise UsageError(f"--out {out} is an existing checkpoint (a torch file); the grid would overwrite it: "
                         f"give an image file name such as samples.png")
    image_format(out, "--out")


def _is_torch_file(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"     # torch.save writes a zip archive


def check_seed(seed: int) -> None:
    if not 0 <= seed < 2**64:
        raise UsageError(f"--seed must be in [0, 2**64 - 1] (a 64-bit seed for torch.Generator); got {seed}")


def check_guidance(guidance: Optional[float]) -> None:
    if guidance is None:
        return
    check_scale(guidance, "--guidance")           # finite and |w| <= 1000: 1e308 would make every sample NaN


# -- train ---------------------------------------------------------------------------------------
def train_command(args: argparse.Namespace) -> int:
    out = Path(args.out or Path("runs") / args.recipe)
    check_writable_folder(out, "--out")
    check_new_run(out, args)
    if args.ship is not None:
        check_writable_folder(Path(args.ship), "--ship")
    check_count(args.steps, "--steps")
    if args.max_seconds is not None and not args.max_seconds > 0:
        raise UsageError(f"--max-seconds must be > 0 (a wall time in seconds); got {args.max_seconds}")
    if args.resume is not None:
        check_resume_file(Path(args.resume))
    recipe = RECIPES[args.recipe]
    run = RunConfig(device=pick_device(args.device), bf16=not args.fp32, compile=args.compile,
                    cuda_graph=args.cuda_graph, channels_last=args.channels_last,
                    log_every=recipe.log_every, sample_every=recipe.sample.every,
                    checkpoint_every=recipe.checkpoint_every, out_dir=str(out),
                    max_seconds=args.max_seconds if args.max_seconds is not None else recipe.max_seconds)
    trainer = make_trainer(recipe, run, steps=args.steps, resume=args.resume)
    try:
        return train_and_save(args, recipe, trainer, out)
    finally:
        trainer.close()


def train_and_save(args: argparse.Namespace, recipe, trainer, out: Path) -> int:
    if args.resume is not None and trainer.step >= trainer.cfg.steps:
        raise UsageError(f"--resume {args.resume} is already at step {trainer.step} of {trainer.cfg.steps}: "
                         f"nothing to train; give --steps above {trainer.step} to train on")
    kept = train_recipe(recipe, trainer)        # the weights at the recipe's snapshots, if it has any
    finished = finish(recipe, trainer)
    trainer.save()
    trainer.save_model(out / "model.pt")
    if trainer.rank == 0:
        print(f"step {trainer.step}: loss {trainer.loss_history[-1][1]:.4f}; wrote {out / 'checkpoint.pt'} "
              f"and {out / 'model.pt'}")
        metrics = finished | (evaluate_snapshots(recipe, trainer, kept) if kept else evaluate_recipe(recipe, trainer))
        if metrics:
            print("metrics: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in metrics.items()))
        if args.ship is not None and kept:
            ship_snapshots(args.recipe, trainer, kept, metrics, args.ship)
            print(f"shipped {args.recipe} ({', '.join(kept)}) into {args.ship}")
        elif args.ship is not None:
            ship(args.recipe, trainer, metrics, args.ship,
                 dtype="float32" if args.recipe == "classifier" else "float16")
            print(f"shipped {args.recipe} into {args.ship}")
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


# -- sample --------------------------------------------------------------------------------------
FLOW_SOLVERS = ("euler", "heun")


def sample_command(args: argparse.Namespace) -> int:
    check_count(args.n, "--n", maximum=MAX_SAMPLES, why=" (one grid image; draw more from Python, in batches)")
    check_count(args.steps, "--steps")
    check_seed(args.seed)
    check_writable_file(Path(args.out), "--out")
    check_sample_out(Path(args.out), args.checkpoint)
    check_guidance(args.guidance)
    device = torch.device(pick_device(args.device))
    model, schedule, diffusion = load_for_sampling(args.checkpoint, device)
    flow = isinstance(schedule, FlowPath)
    sampler = args.sampler or ("euler" if flow else "ddim")
    if flow != (sampler in FLOW_SOLVERS):
        kind, allowed = ("a flow-matching model", FLOW_SOLVERS) if flow else ("a diffusion model", SAMPLERS)
        raise UsageError(f"--checkpoint {args.checkpoint} is {kind}: --sampler must be one of {allowed}; "
                         f"got {sampler}")
    if model.config.vocab_size is not None:
        raise UsageError(f"--checkpoint {args.checkpoint!r} is a text-to-image model in an autoencoder's latent "
                         f"space: draw from it in Python, md.text_to_image(['a red circle at the top left'])")
    num_classes = model.config.num_classes
    labels = sample_labels(args.n, args.label, num_classes)
    labels = labels.to(device) if labels is not None else None
    guidance = args.guidance if labels is not None else None
    if guidance is not None and guidance < 0:
        print(f"note: --guidance {args.guidance} < 0 pushes samples *away* from their labels (anti-guidance); "
              f"0 is unconditional, 1 conditional", file=sys.stderr)
    if args.guidance is not None and labels is None:
        raise UsageError("--guidance needs a class-conditional model; this one is unconditional")
    shape = (model.config.in_channels, model.config.image_size, model.config.image_size)
    generator = torch.Generator(device).manual_seed(args.seed)
    with torch.no_grad():       # in batches of SAMPLE_BATCH, from one stream of noise
        parts = []
        for batch in torch.arange(args.n).split(SAMPLE_BATCH):
            y = None if labels is None else labels[batch]
            parts.append(flow_sample(model, (len(batch), *shape), args.steps, y, guidance, solver=sampler,
                                     generator=generator) if flow else
                         sample(sampler, model, schedule, (len(batch), *shape), args.steps, y, guidance,
                                generator=generator))
        images = torch.cat(parts)
    strong = f"--guidance {args.guidance:g} is too strong for this model (1 to 10 is usual)" \
        if guidance not in (None, 0, 1) else None
    if not torch.isfinite(images).all():
        cause = f"{strong}: w·(ε_c − ε_u) overflowed" if strong else \
            f"the model file {args.checkpoint} may hold non-finite weights"
        raise NonFiniteLossError(f"the samples hold NaN or inf ({cause}); no image was written")
    warn_if_saturated(images, strong)
    path = save_grid(images.clamp(-1, 1), args.out,
                     nrow=grid_row(num_classes) if args.label is None and num_classes else None)
    print(f"wrote {args.n} samples to {path}")
    return 0


def warn_if_saturated(images: torch.Tensor, cause: Optional[str]) -> None:
    """A warning on stderr when more than 1% of the pixels lie far outside [-1, 1]: the grid draws them
    clamped to black or white, so it would look like samples while it is mostly saturation."""
    saturated = float((images.abs() > SATURATED).float().mean())
    if saturated > 0.01:
        print(f"warning: {saturated:.1%} of the pixels lie beyond ±{SATURATED} (largest |x| "
              f"{float(images.abs().max()):.3g}; the model's range is [-1, 1]) and are drawn clamped to black or "
              f"white: {cause or 'the model may be undertrained or damaged'}", file=sys.stderr)


def load_for_sampling(checkpoint: str, device: torch.device) -> tuple:
    """(model, schedule, DiffusionConfig) from a checkpoint file, or from the shipped model of that name
    (its target, e.g. v, comes with it). A name that is neither lists the shipped names."""
    path = Path(checkpoint)
    if path.is_file():          # the user's own file: the shipped manifest is not read at all
        return pretrained.load_trained(path, device)
    shipped = pretrained.diffusion_names()
    if checkpoint in shipped:
        return pretrained.load_diffusion(checkpoint, device)
    if path.is_dir():
        raise UsageError(f"--checkpoint {checkpoint} is a folder; give the model.pt or checkpoint.pt in it")
    raise UsageError(f"--checkpoint {checkpoint!r} is neither a file nor a shipped model ({', '.join(shipped)})")


def grid_row(num_classes) -> int:
    """Images per grid row: one per class (per class of the first attribute, for several)."""
    return num_classes if isinstance(num_classes, int) else num_classes[0]


def sample_labels(n: int, label: Optional[int], num_classes) -> Optional[torch.Tensor]:
    """``label`` n times, or the classes in turn (every combination, for a model of several attributes);
    None for an unconditional model."""
    if label is not None and num_classes is None:
        raise UsageError("--label needs a class-conditional model; this one is unconditional")
    if label is not None and not isinstance(num_classes, int):
        raise UsageError(f"--label picks one class of a single-label model; this one is conditioned on "
                         f"{len(num_classes)} attributes (class counts {tuple(num_classes)}): leave --label out "
                         f"to draw every combination, or use minidiff.guidance.Composed from Python")
    if label is not None and not 0 <= label < num_classes:
        raise UsageError(f"--label must be in [0, {num_classes}) for this model; got {label}")
    if num_classes is None:
        return None
    return torch.full((n,), label) if label is not None else labels_in_turn(n, num_classes)


def join_negative_numbers(argv: Sequence[str]) -> list[str]:
    """``--guidance -1e6`` -> ``--guidance=-1e6``: argparse reads a value such as -1e6 or -inf as a flag."""
    argv, joined = list(argv), []
    while argv:
        arg = argv.pop(0)
        if arg in NUMBER_FLAGS and argv and argv[0].startswith("-") and _is_number(argv[0]):
            arg = f"{arg}={argv.pop(0)}"
        joined.append(arg)
    return joined


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(join_negative_numbers(sys.argv[1:] if argv is None else argv))
    try:
        return args.func(args)
    except USER_ERRORS as err:
        # a full disk or the file-size limit: their message is whole without the "[Errno N]" prefix
        print(f"error: {err.strerror if isinstance(err, (DiskFullError, FileSizeLimitError)) else err}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
