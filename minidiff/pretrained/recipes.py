r"""Recipes: named training runs, written down as data so that a shipped checkpoint can be remade.

    python -m minidiff train --recipe mnist_cond          # reproduces checkpoints/mnist_cond
    python -m minidiff train --recipe classifier          # reproduces checkpoints/classifier (CPU: ~1 minute)
    python -m minidiff train --recipe shapes_vae          # then shapes_ldm, which trains on its latents
    python -m minidiff train --recipe tiny --out /tmp/t   # seconds on a CPU: every code path, no quality

A recipe fixes the data, the network (any kind in ``minidiff.registry``), the objective (a
DiffusionConfig, or a ClassificationConfig) and the optimisation. Where it runs (device, compile, bf16,
output folder) is not part of it: that is ``RunConfig``, chosen on the command line.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor

from .. import metrics, samplers
from ..checkpoint import load_checkpoint
from ..data import CAPTION_WORDS, Scenes, Shapes, mnist
from ..flow import FlowConfig, flow_sample
from ..guidance import labels_in_turn
from ..nn.autoencoder import AutoencoderConfig
from ..nn.classifier import ClassifierConfig
from ..nn.unet import UNetConfig
from ..objectives import OBJECTIVES, ClassificationConfig, DiffusionConfig, Objective, ReconstructionConfig
from ..registry import KINDS, build, config_dict, describe
from ..samplers import ddim_sample_fn
from ..train import RunConfig, SampleFn, TrainConfig, Trainer
from . import save_shipped

ModelConfig = Union[UNetConfig, ClassifierConfig, AutoencoderConfig]
ObjectiveConfig = Union[DiffusionConfig, FlowConfig, ClassificationConfig, ReconstructionConfig]
SCENES = 40_000                  # the training scenes of notebook 08 (seed 0, 1 to 3 shapes, 64×64)


@dataclass
class SampleConfig:
    """How a recipe draws samples (DDIM, classes 0, 1, 2, … in turn): grids while training, metrics after."""
    every: int = 0                             # steps between grids in out_dir/samples (0: none)
    n: int = 64                                # images per grid
    steps: int = 50                            # DDIM steps
    guidance_scale: Optional[float] = None     # classifier-free guidance (conditional models)
    eval_samples: int = 0                      # 1,000: score the protocol of minidiff.metrics after training
    sampler: str = "ddim"                      # the sampler of the evaluation ("ddim" or "dpm++")
    by_sampler: bool = False                   # also score DDPM 1000, DDIM 50, DPM-Solver++ 20 (notebook 06 reads them)


@dataclass
class Recipe:
    """One reproducible run. ``max_seconds`` trains for a fixed wall time instead of all ``steps``
    (the learning-rate schedule still spans ``train.steps``)."""
    data: str                                  # a name in DATASETS
    model: ModelConfig                         # the config of a kind in minidiff.registry.KINDS
    objective: ObjectiveConfig
    train: TrainConfig
    sample: SampleConfig = field(default_factory=SampleConfig)
    max_seconds: Optional[float] = None
    log_every: int = 100
    checkpoint_every: int = 1000
    snapshots: tuple[float, ...] = ()          # fractions of train.steps at which the raw and EMA weights are kept


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
        objective=DiffusionConfig(schedule="linear", num_steps=1000, target="v", p_uncond=0.1),
        train=TrainConfig(steps=6106, batch_size=256, lr=1e-3, min_lr=1e-5, warmup_steps=300,
                          ema_decay=0.999, grad_clip=1.0, seed=0),
        sample=SampleConfig(every=0, n=100, steps=50, guidance_scale=None, eval_samples=1000),
        checkpoint_every=4000),
    # Notebook 09's flow-matching model: mnist_cond's U-Net, data and optimisation, trained on the straight path
    # x_t = (1 − t)x_0 + tε to predict u = ε − x_0, t logit-normal (SD3), the network seeing 1000·t. Measured
    # (benchmarks/flow_vs_v.py, H100, 2026-12-06): 6,106 steps in 122 s, then 16 Euler steps 1.02× the FD
    # floor (99.1%), and at every budget of <= 8 network calls at or below the v-model's best sampler.
    "mnist_flow": Recipe(
        data="mnist",
        model=UNetConfig(image_size=28, in_channels=1, base_channels=32, channel_mults=(1, 2, 2),
                         blocks_per_level=2, attention_resolutions=(7,), dropout=0.1, num_classes=10,
                         head_dim=32, time_scale=1000.0),
        objective=FlowConfig(time="logit_normal", p_uncond=0.1),
        train=TrainConfig(steps=6106, batch_size=256, lr=1e-3, min_lr=1e-5, warmup_steps=300,
                          ema_decay=0.999, grad_clip=1.0, seed=0),
        sample=SampleConfig(every=0, n=100, steps=16, guidance_scale=None, eval_samples=1000),
        checkpoint_every=4000),
    # Notebook 06's ε-model: the same data and objective as mnist_cond but target ε, in a network small
    # enough to ship beside it (widths 16-32-32, one block per level, 0.30 M parameters, 0.65 MB in
    # float16). It is there to show what the course's switch to v is about: an ε-model's x̂_0 is barely
    # trained at high noise, and its deterministic samplers keep that. Evaluated as mnist_cond's file was
    # (DDPM 1000, DDIM 50, DPM-Solver++ 20; ``by_sampler``). Not yet shipped: a CPU run of 1,000 steps
    # (33 minutes of one shared core, 2026-12-02) reached an ε-loss of 0.031 but its ε̂ at high noise was
    # 100× worse than ε̂ = x_t, and DDPM and DDIM both drew saturated blobs (DDIM 50: 12% accuracy), so it needs the
    # GPU: `python -m minidiff train --recipe mnist_eps --cuda-graph --ship minidiff/pretrained/checkpoints`.
    "mnist_eps": Recipe(
        data="mnist",
        model=UNetConfig(image_size=28, in_channels=1, base_channels=16, channel_mults=(1, 2, 2),
                         blocks_per_level=1, attention_resolutions=(7,), dropout=0.1, num_classes=10,
                         head_dim=32),
        objective=DiffusionConfig(schedule="linear", num_steps=1000, target="eps", p_uncond=0.1),
        train=TrainConfig(steps=30_000, batch_size=32, lr=1.5e-3, min_lr=1e-5, warmup_steps=200,
                          ema_decay=0.999, grad_clip=1.0, seed=0),
        sample=SampleConfig(every=0, n=100, steps=50, guidance_scale=None, eval_samples=1000, by_sampler=True),
        log_every=100, checkpoint_every=2000),
    # The metrics' digit classifier: 60 passes' worth of batches over the 4,000 training digits, each
    # digit freshly turned/moved/zoomed, warm-up then cosine (the shape of a one-cycle schedule). No
    # EMA (ema_decay 0: the "EMA" is the weights themselves, so BatchNorm's statistics match them).
    # Measured 2026-12-01 on a 2-core CPU: 99.3% on the held-out digits (940 steps: 98.5%). The shipped
    # file predates the common Trainer (see its manifest entry) and is kept, so that every Fréchet
    # distance measured in its features stays comparable.
    "classifier": Recipe(
        data="mnist",
        model=ClassifierConfig(channels=(32, 64), feature_dim=128, dropout=0.3),
        objective=ClassificationConfig(label_smoothing=0.1),
        train=TrainConfig(steps=1880, batch_size=128, lr=3e-3, min_lr=0.0, warmup_steps=564, weight_decay=5e-4,
                          ema_decay=0.0, ema_warmup=False, grad_clip=0.0, seed=0),
        log_every=188, checkpoint_every=0),
    # The judge of notebook 07's Shapes samples: the classifier network on 32×32 RGB, 4 shapes. Shapes
    # come rotated and placed at random, so the classifier's own small turns and shifts are only mild
    # extra augmentation. 20,000 training images (seed 0); held out: seed 1.
    "shapes_classifier": Recipe(
        data="shapes",
        model=ClassifierConfig(channels=(32, 64), feature_dim=128, dropout=0.3, num_classes=4, in_channels=3,
                               image_size=32),
        objective=ClassificationConfig(label_smoothing=0.1),
        train=TrainConfig(steps=1500, batch_size=128, lr=3e-3, min_lr=0.0, warmup_steps=300, weight_decay=5e-4,
                          ema_decay=0.0, ema_warmup=False, grad_clip=0.0, seed=0),
        log_every=150, checkpoint_every=0),
    # Notebook 07's second model: 32×32 RGB Shapes conditioned on two attributes, shape (4) and colour (8),
    # each dropped to its own null label 20% of the time, independently, so that the network learns
    # both, either and neither (4% of the batch is fully unconditional). The widths of mnist_cond.
    "shapes_cond": Recipe(
        data="shapes_attributes",
        model=UNetConfig(image_size=32, in_channels=3, base_channels=32, channel_mults=(1, 2, 2),
                         blocks_per_level=2, attention_resolutions=(8,), dropout=0.1, num_classes=(4, 8),
                         head_dim=32),
        objective=DiffusionConfig(schedule="linear", num_steps=1000, target="v", p_uncond=0.2),
        train=TrainConfig(steps=8000, batch_size=256, lr=1e-3, min_lr=1e-5, warmup_steps=300,
                          ema_decay=0.999, grad_clip=1.0, seed=0),
        sample=SampleConfig(every=0, n=64, steps=50, guidance_scale=2.0, eval_samples=1024),
        checkpoint_every=4000),
    # Notebook 08's autoencoder: 64×64 RGB scenes of 1-3 shapes to 4×16×16 latents (f = 4), widths
    # 64-128-128 (2.40 M parameters; diffusers' AutoencoderKL at these widths has 3.79 M), L1 + 1e-6·KL,
    # batch 64 in bf16, as the peer of issue 15 was measured. Two minutes on an H200: 6,560 steps is what
    # `benchmarks/latent_diffusion.py --phases vae` fitted to 120 s from the warm-up's speed (the command
    # that shipped it; it stopped at step 5,750, when 120 s of training had passed). Held-out PSNR 45.8 dB
    # on single shapes, 44.4 dB on scenes (2026-12-02). After training, the latent scale 1/std(μ) is
    # measured on 5,000 training scenes (``finish``): 1.527.
    "shapes_vae": Recipe(
        data="scenes",
        model=AutoencoderConfig(in_channels=3, image_size=64, channels=(64, 128, 128), blocks_per_level=1,
                                latent_channels=4),
        objective=ReconstructionConfig(loss="l1", beta=1e-6),
        train=TrainConfig(steps=6560, batch_size=64, lr=1e-3, min_lr=1e-5, warmup_steps=300, ema_decay=0.999,
                          grad_clip=1.0, seed=0),
        max_seconds=120.0, log_every=200, checkpoint_every=0),
    # Notebook 08's text-to-image model: a U-Net on shapes_vae's latents (4×16×16), captions read by a
    # 2-layer text encoder and cross-attention at 8×8 and 4×4; captions dropped to the empty one 10% of the
    # time for guidance. Widths 48-96-96 (4.8 M parameters) keep 16 images in 20 guided steps within
    # 10 s on a 2-core CPU. Evaluated with DPM-Solver++ 20 steps, as md.text_to_image samples. A step is
    # short enough to be launch-bound: train it with --cuda-graph (on an H200: 55 steps/s, 14 eager), whose
    # speed fitted 9,803 steps to the 180 s (the shipped run stopped at 9,700).
    "shapes_ldm": Recipe(
        data="scene_latents",
        model=UNetConfig(image_size=16, in_channels=4, base_channels=48, channel_mults=(1, 2, 2),
                         blocks_per_level=2, attention_resolutions=(8,), dropout=0.1, head_dim=32,
                         vocab_size=len(CAPTION_WORDS) + 1, max_tokens=16, text_dim=128, text_layers=2,
                         cross_attention_resolutions=(8, 4)),
        objective=DiffusionConfig(schedule="linear", num_steps=1000, target="v", p_uncond=0.1),
        train=TrainConfig(steps=9_800, batch_size=256, lr=1e-3, min_lr=1e-5, warmup_steps=500,
                          ema_decay=0.999, grad_clip=1.0, seed=0),
        sample=SampleConfig(every=0, n=64, steps=20, guidance_scale=3.0, eval_samples=1000, sampler="dpm++"),
        max_seconds=180.0, log_every=200, checkpoint_every=0),
    # Notebook 05's EMA lesson: the raw weights θ and their average θ_ema, kept 30% of the way in (the
    # learning rate near its peak, θ still jumping from step to step) and at the end (the rate decayed to
    # min_lr), all four shipped in one file (``pretrained.load_snapshots("mnist_ema")``). A small network
    # (widths 12-24-24, 0.17 M parameters, 4 × 0.34 MB in float16) so that the whole set stays small and a
    # CPU can train a short version of it: ``--steps`` shortens the run, and the snapshots stay at the same
    # fractions of it.
    "mnist_ema": Recipe(
        data="mnist",
        model=UNetConfig(image_size=28, in_channels=1, base_channels=12, channel_mults=(1, 2, 2),
                         blocks_per_level=1, attention_resolutions=(7,), dropout=0.0, num_classes=10,
                         head_dim=12),
        objective=DiffusionConfig(schedule="linear", num_steps=1000, target="v", p_uncond=0.1),
        train=TrainConfig(steps=6000, batch_size=64, lr=2e-3, min_lr=1e-5, warmup_steps=100,
                          ema_decay=0.995, grad_clip=1.0, seed=0),
        sample=SampleConfig(every=0, n=100, steps=20, guidance_scale=None, eval_samples=1000, sampler="dpm++"),
        log_every=50, checkpoint_every=1000, snapshots=(0.3, 1.0)),
    # The smallest run that still goes through every code path: for tests and smoke checks.
    "tiny": Recipe(
        data="mnist",
        model=UNetConfig(image_size=28, in_channels=1, base_channels=8, channel_mults=(1, 2, 2),
                         blocks_per_level=1, attention_resolutions=(7,), dropout=0.1, num_classes=10,
                         head_dim=8),
        objective=DiffusionConfig(p_uncond=0.1),
        train=TrainConfig(steps=20, batch_size=16, lr=1e-3, warmup_steps=5, ema_decay=0.9, seed=0),
        sample=SampleConfig(every=10, n=10, steps=5, guidance_scale=2.0),
        log_every=5, checkpoint_every=10),
}


def _mnist() -> tuple[Tensor, Tensor]:
    digits = mnist("train")
    return digits.images, digits.labels


def _shapes() -> tuple[Tensor, Tensor]:
    return Shapes(20_000, 32, seed=0).batch(20_000)


def _shapes_attributes() -> tuple[Tensor, Tensor]:
    return Shapes(50_000, 32, seed=0, attributes=("shape", "color")).batch(50_000)


@lru_cache(maxsize=1)
def _scenes() -> tuple[Tensor, list[str]]:
    """The SCENES training scenes of notebook 08 (seed 0, 64×64) and their captions, rendered once."""
    return Scenes(SCENES, 64, seed=0, max_shapes=3).batch(SCENES)


def _scene_images() -> tuple[Tensor, None]:
    return _scenes()[0], None


def _scene_latents() -> tuple[Tensor, Tensor]:
    """The training scenes as shipped shapes_vae latents (encoded on the GPU when there is one), and their
    captions as token ids: what shapes_ldm trains on."""
    from .. import latent
    from . import load_autoencoder
    images, captions = _scenes()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    z = latent.encode_images(load_autoencoder("shapes_vae", device), images).cpu()
    return z, latent.caption_tokenizer().encode(captions)


DATASETS: dict[str, Callable[[], tuple[Tensor, Optional[Tensor]]]] = {
    "mnist": _mnist, "shapes": _shapes, "shapes_attributes": _shapes_attributes, "scenes": _scene_images,
    "scene_latents": _scene_latents}


def load_data(name: str) -> tuple[Tensor, Optional[Tensor]]:
    """(images (N, C, H, W) in [-1, 1], labels (N,) or None) of the dataset called ``name``."""
    if name not in DATASETS:
        raise ValueError(f"data must be one of {sorted(DATASETS)}; got {name!r}")
    return DATASETS[name]()


def model_description(config: ModelConfig) -> dict:
    """The registry description of a fresh model with ``config`` (its kind found from the config's class)."""
    kinds = [name for name, kind in KINDS.items() if isinstance(config, kind.config_class)]
    if not kinds:
        raise ValueError(f"model must be the config of a registered kind ({sorted(KINDS)}); "
                         f"got {type(config).__name__}")
    return {"kind": kinds[0], "config": config_dict(config), "target": None}


def make_objective(config: ObjectiveConfig) -> Objective:
    """The objective a recipe's ``objective`` config stands for."""
    for make, config_class in OBJECTIVES.values():
        if isinstance(config, config_class):
            return make(config)
    raise ValueError(f"objective must be one of {[c.__name__ for _, c in OBJECTIVES.values()]}; "
                     f"got {type(config).__name__}")


def make_trainer(recipe: Recipe, run: RunConfig, steps: Optional[int] = None,
                 resume: Optional[str] = None) -> Trainer:
    """A Trainer for ``recipe`` (data loaded, weights seeded), or continuing the checkpoint ``resume``
    with the run's own saved settings (a checkpoint of another recipe's model or objective is an error).
    ``steps`` overrides the number of steps; ``run`` decides where and how fast."""
    images, labels = load_data(recipe.data)
    sample_fn = recipe_sample_fn(recipe) if recipe.sample.every else None
    if resume is not None:
        saved = _check_resume(recipe, resume)
        train = replace(saved, steps=steps) if steps is not None else saved
        return Trainer.from_checkpoint(resume, images, labels, run, sample_fn, train)
    train = replace(recipe.train, steps=steps) if steps is not None else recipe.train
    torch.manual_seed(train.seed)          # the initial weights are part of the recipe
    model = build(model_description(recipe.model))
    return Trainer(model, images, labels, train, make_objective(recipe.objective), run, sample_fn)


def _check_resume(recipe: Recipe, path: str) -> TrainConfig:
    """The saved TrainConfig of checkpoint ``path``, after checking that it was made by ``recipe``'s
    model and objective."""
    config = load_checkpoint(path).get("config") or {}
    saved_model = dict(config.get("model") or {}, target=None)
    wanted = model_description(recipe.model)
    if saved_model != wanted:
        raise ValueError(f"--resume {path} holds a different model than the recipe: {saved_model} vs {wanted}; "
                         f"resume it with the recipe that made it")
    wanted_objective = make_objective(recipe.objective).describe()
    if config.get("objective") != wanted_objective:
        raise ValueError(f"--resume {path} was trained with objective {config.get('objective')}, the recipe "
                         f"asks for {wanted_objective}; resume it with the recipe that made it")
    return TrainConfig(**config["train"])


def recipe_sample_fn(recipe: Recipe) -> SampleFn:
    """The Trainer's ``sample_fn`` for a diffusion ``recipe``: a grid of ``recipe.sample.n`` DDIM samples."""
    if not isinstance(recipe.objective, DiffusionConfig):
        raise ValueError("only diffusion recipes draw samples; "
                         f"this one's objective is {type(recipe.objective).__name__}")
    cfg, sample = recipe.model, recipe.sample
    labels = labels_in_turn(sample.n, cfg.num_classes) if cfg.num_classes else None
    shape = (sample.n, cfg.in_channels, cfg.image_size, cfg.image_size)
    return ddim_sample_fn(recipe.objective.make_schedule(), shape, labels, steps=sample.steps,
                          guidance_scale=sample.guidance_scale if labels is not None else None)


def evaluate_recipe(recipe: Recipe, trainer: Trainer) -> dict[str, Any]:
    """The numbers a recipe is judged by, measured on the trained EMA model: for a diffusion recipe
    with ``eval_samples``, the metrics protocol (DDIM, ``sample.steps``; for Shapes, the attributes'
    accuracy at ``sample.guidance_scale``); for a classifier, its held-out accuracy (and on MNIST the
    metrics' floor in its features). {} when the recipe measures nothing."""
    if isinstance(recipe.objective, ClassificationConfig):
        return _evaluate_classifier(recipe, trainer.ema.to("cpu"))
    if isinstance(recipe.objective, ReconstructionConfig):
        return evaluate_autoencoder(trainer.ema)
    if isinstance(recipe.objective, FlowConfig):
        return evaluate_flow_model(trainer.ema, recipe.sample.steps) if recipe.sample.eval_samples > 0 else {}
    if recipe.sample.eval_samples > 0 and getattr(recipe.model, "vocab_size", None):
        return evaluate_text_model(trainer.ema, trainer.schedule, recipe.sample)
    if recipe.sample.eval_samples <= 0 or not recipe.model.num_classes:
        return {}
    if recipe.data == "shapes_attributes":
        return evaluate_shapes_model(trainer.ema, trainer.schedule, recipe.sample)
    result = metrics.evaluate_model(trainer.ema, trainer.schedule, "ddim", recipe.sample.steps,
                                    recipe.sample.guidance_scale)
    return result | ({"by_sampler": compare_samplers(trainer.ema, trainer.schedule)}
                     if recipe.sample.by_sampler else {})


def evaluate_flow_model(model: torch.nn.Module, steps: int, draws: int = 3,
                        by_steps: tuple[int, ...] = (1, 2, 4, 8, 32)) -> dict[str, Any]:
    """The metrics protocol on a class-conditional flow model: 1,000 samples (100 per class) from ``steps``
    Euler steps, mean of ``draws`` draws; and one draw at each of ``by_steps`` (FD/floor and accuracy)."""
    device = next(model.parameters()).device

    def score(k: int, seed: int) -> dict:
        labels = labels_in_turn(1000, 10).to(device)
        x = flow_sample(model, (1000, 1, 28, 28), k, y=labels, generator=torch.Generator(device).manual_seed(seed))
        return metrics.evaluate(x.clamp(-1, 1).float().cpu(), labels.cpu())
    results = [score(steps, seed) for seed in range(draws)]
    mean = {key: sum(r[key] for r in results) / draws for key in ("fd", "fd_floor", "fd_ratio", "kid", "accuracy")}
    by = {f"Euler {k}": {key: score(k, 0)[key] for key in ("fd_ratio", "accuracy")} for k in by_steps}
    return mean | {"sampler": f"Euler {steps}", "draws": draws, "by_steps": by}


BY_SAMPLER = {"DDPM 1000": ("ddpm", 1000), "DDIM 50": ("ddim", 50), "DPM-Solver++ 20": ("dpm++", 20)}


def compare_samplers(model: torch.nn.Module, schedule, draws: int = 2) -> dict[str, dict]:
    """FD, its ratio to the floor and accuracy of ``model`` under each sampler of ``BY_SAMPLER``, by the metrics
    protocol (1,000 samples, 100 per class, mean of ``draws`` draws): DDPM's stochastic steps against the
    deterministic samplers, the comparison notebook 06 prints for each shipped MNIST model."""
    rows = {}
    for key, (sampler, steps) in BY_SAMPLER.items():
        r = metrics.evaluate_model(model, schedule, sampler, steps, draws=draws)
        rows[key] = {"fd": r["fd"], "fd_ratio": r["fd_ratio"], "accuracy": r["accuracy"]}
    return rows


def _evaluate_classifier(recipe: Recipe, model: torch.nn.Module) -> dict[str, Any]:
    if recipe.data == "shapes":
        images, labels = metrics.shapes_reference(2000)
        predicted = metrics.shape_predictions(images, model)
        return {"heldout_accuracy": (predicted == labels[:, 0]).double().mean().item()}
    images, labels = metrics.reference_images()
    floor = metrics.reference_floor(model)
    return {"heldout_accuracy": metrics.class_accuracy(images, labels, model), "floor_fd": floor["fd"],
            "floor_kid": floor["kid"][0], "floor_kid_std": floor["kid"][1]}


def evaluate_shapes_model(model: torch.nn.Module, schedule, sample: SampleConfig, seed: int = 0) -> dict[str, Any]:
    """``metrics.evaluate_shapes`` on ``sample.eval_samples`` DDIM samples, every (shape, colour) in turn."""
    labels = labels_in_turn(sample.eval_samples, model.null_label).to(schedule.device)
    shape = (len(labels), 3, 32, 32)
    with torch.no_grad():
        x = samplers.sample("ddim", model, schedule, shape, sample.steps, labels, sample.guidance_scale,
                            generator=torch.Generator(schedule.device).manual_seed(seed))
    return metrics.evaluate_shapes(x.clamp(-1, 1).cpu(), labels.cpu()) | {
        "guidance_scale": sample.guidance_scale, "steps": sample.steps, "n": len(labels)}


def finish(recipe: Recipe, trainer: Trainer) -> dict[str, Any]:
    """What a recipe does to its trained model before it is saved: an autoencoder measures its latent scale
    1/std(μ) on 5,000 training images (``Autoencoder.measure_scale``). Returns what it measured."""
    if not isinstance(recipe.objective, ReconstructionConfig):
        return {}
    scale = trainer.ema.measure_scale(trainer.data[0][:5000])
    with torch.no_grad():
        trainer.model.scale.fill_(scale)        # the EMA copies the model's buffers at every step
    return {"latent_scale": scale}


def evaluate_autoencoder(model: torch.nn.Module, n: int = 1000) -> dict[str, Any]:
    """Held-out PSNR (dB, mean over images) of ``model`` on ``n`` single shapes (``Shapes(size=64, seed=1)``, the
    peer's test set) and ``n`` scenes of 1-3 shapes (``Scenes(seed=1)``), never trained on."""
    from .. import latent
    result = {}
    for name, images in (("psnr_shapes", Shapes(n, 64, seed=1).batch(n)[0]),
                         ("psnr_scenes", Scenes(n, 64, seed=1).batch(n)[0])):
        recon = latent.decode_latents(model, latent.encode_images(model, images, 250), 250)
        result[name] = metrics.psnr(recon.float().cpu(), images).mean().item()
    return result | {"latent_scale": float(model.scale)}


def evaluate_text_model(model: torch.nn.Module, schedule, sample: SampleConfig, seed: int = 0) -> dict[str, Any]:
    """``metrics.evaluate_scenes`` of text-to-image samples: ``sample.eval_samples`` held-out single-shape
    captions (seed 1) and half as many multi-shape ones, sampled with ``sample.sampler`` at
    ``sample.guidance_scale`` and decoded by the shipped shapes_vae."""
    from .. import latent
    from . import load_autoencoder
    n = sample.eval_samples
    single = Scenes(n, 64, seed=1, max_shapes=1)
    multi = Scenes(n // 2, 64, seed=1, max_shapes=3)
    captions = [single.caption(i) for i in range(n)] + [multi.caption(i) for i in range(n // 2)]
    autoencoder = load_autoencoder("shapes_vae", schedule.device)
    tokens = latent.caption_tokenizer(model.config.max_tokens).encode(captions)
    images = latent.sample_images(model, schedule, autoencoder, tokens, sample.steps, sample.guidance_scale,
                                  sample.sampler, generator=torch.Generator(schedule.device).manual_seed(seed))
    result = metrics.evaluate_scenes(images[:n].float().cpu(), captions[:n], max_shapes=1)
    multi_result = metrics.scene_accuracy(images[n:].float().cpu(), captions[n:])
    return result | {f"multi_{k}": v for k, v in multi_result.items() if k.startswith(("object", "scene"))} | {
        "guidance_scale": sample.guidance_scale, "steps": sample.steps, "sampler": sample.sampler,
        "n_single": n, "n_multi": n // 2}


def train_recipe(recipe: Recipe, trainer: Trainer) -> dict[str, dict[str, Tensor]]:
    r"""Train ``trainer`` to its last step. At each of ``recipe.snapshots`` (fractions of ``train.steps``) keep a
    copy of the raw weights $\theta$ and of their EMA $\theta_{ema}$: ``{"raw 1000": state, "ema 1000": state, …}``
    (on the CPU; {} for a recipe without snapshots, or for a snapshot a resumed run had already passed)."""
    kept: dict[str, dict[str, Tensor]] = {}
    for fraction in recipe.snapshots:
        stop = max(1, round(fraction * trainer.cfg.steps))
        if stop > trainer.step:
            trainer.train(stop - trainer.step)
        if trainer.step == stop:
            for copy, model in (("raw", trainer.model), ("ema", trainer.ema)):
                kept[f"{copy} {stop}"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    trainer.train()
    return kept


def evaluate_snapshots(recipe: Recipe, trainer: Trainer, kept: dict[str, dict[str, Tensor]]) -> dict[str, Any]:
    """The metrics protocol (``sample.sampler``, ``sample.steps``) on each kept set of weights:
    ``{"by_snapshot": {key: {...}}}``."""
    model = copy.deepcopy(trainer.ema).eval()
    by_snapshot = {}
    for key, state in kept.items():
        model.load_state_dict(state)
        result = metrics.evaluate_model(model, trainer.schedule, recipe.sample.sampler, recipe.sample.steps)
        by_snapshot[key] = {k: result[k] for k in ("fd", "fd_ratio", "kid", "kid_std", "accuracy")}
    return {"by_snapshot": by_snapshot}


def ship_snapshots(name: str, trainer: Trainer, kept: dict[str, dict[str, Tensor]], metrics: dict,
                   root: Optional[str] = None) -> dict:
    """Write every kept set of weights (``train_recipe``) into one shipped file ``name``, in float16, each tensor
    under ``"<key>.<parameter>"`` (key ``"raw 1000"``, ``"ema 1000"``, …); ``pretrained.load_snapshots`` reads it."""
    state = {f"{key}.{k}": v for key, weights in kept.items() for k, v in weights.items()}
    gpu = torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda" else "cpu"
    config = {"model": describe(trainer.ema), "objective": trainer.objective.describe(),
              "train": asdict(trainer.cfg), "snapshots": list(kept)}
    metrics = {"steps": trainer.step, "trained_on": f"{gpu} (torch {torch.__version__})"} | metrics
    return save_shipped(name, state, recipe=name, metrics=metrics, config=config, dtype="float16", root=root)


def ship(name: str, trainer: Trainer, metrics: dict, root: Optional[str] = None, dtype: str = "float16") -> dict:
    """Write ``trainer``'s EMA weights into the checkpoints folder ``root`` (default: the package's own)
    as the shipped checkpoint ``name``, with the model's description, the objective, the settings it was
    trained with and the measured ``metrics``; returns the manifest entry."""
    run = {"bf16": trainer.run.bf16, "compile": trainer.run.compile, "cuda_graph": trainer.run.cuda_graph}
    gpu = torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda" else "cpu"
    config = {"model": describe(trainer.ema), "objective": trainer.objective.describe(),
              "train": asdict(trainer.cfg) | run}
    metrics = {"steps": trainer.step, "trained_on": f"{gpu} (torch {torch.__version__})"} | metrics
    return save_shipped(name, trainer.ema.state_dict(), recipe=name, metrics=metrics, config=config,
                        dtype=dtype, root=root)
