r"""minidiff: a small, readable diffusion-model package, taught by the notebooks beside it.

Notation (one name, one quantity). The math follows the papers: steps t = 1, …, T, x_0 is the
clean image and x_t the image after step t, so ᾱ_0 = 1 (the empty product). The tables are
tensors, 0-indexed: step t sits at POSITION t − 1, and every function's ``t`` argument is a
position (``q_sample(x0, i, s)`` returns x_{i+1}; ``t=-1`` in ``ddim_step`` means x_0).

    code                         math       meaning
    betas[t-1]                   β_t        forward-process variance of step t
    alphas[t-1]                  α_t        1 − β_t           (never ᾱ)
    alphas_cumprod[t-1]          ᾱ_t        ∏_{s=1}^{t} α_s   (ᾱ_0 = 1)
    alphas_cumprod_prev[t-1]     ᾱ_{t−1}    so alphas_cumprod_prev[0] = ᾱ_0 = 1
    x0, x_t                      x_0, x_t   clean image, image after step t
    eps / noise                  ε          standard Gaussian noise, x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε
    s                                       a NoiseSchedule holding those tables
    target                                  what a network predicts: "eps" (ε), "x0" or "v" (model.target)
    w                                       the classifier-free guidance scale (guidance.py)

The package, in the order the course teaches it:

    schedules, diffusion, losses     the forward process and the objective      (notebooks 01–03, 05)
    nn/                              timestep embedding, blocks, U-Net, classifier  (04)
    objectives, train                one Trainer for any model and objective      (05)
    samplers, guidance               DDPM, DDIM, DPM-Solver++; classifier-free guidance  (06, 07)
    nn/autoencoder, nn/text, latent  latent diffusion: the autoencoder, captions, text_to_image  (08)
    metrics                          Fréchet distance, KID, accuracy in a classifier's features
    data                             MNIST, 8×8 digits, procedural Shapes, all in [-1, 1]
    checkpoint, registry             atomic, checksummed files; build / save any model kind
    pretrained/                      the shipped checkpoints and the recipes that made them

``import minidiff`` is the library alone: no plotting, widgets or Jupyter code. The course's tooling
(the profile switch, plots and widgets, exercise checks, the notebook generator) is a separate import,
``import minidiff.course as mc``; the library never imports it.
"""
from . import checkpoint, data, diffusion, guidance, losses, nn, objectives, registry, samplers, schedules, scores, train
from . import latent, metrics, pretrained
from .data import LabelledImages, Scenes, Shapes, mnist, sklearn_digits, to_model_range, to_pixel_range, torchvision_dataset
from .diffusion import (eps_and_x0, predict_eps_from_v, predict_eps_from_x0, predict_v, predict_x0_from_eps,
                        predict_x0_from_v, q_chain, q_posterior, q_sample, q_step)
from .guidance import ClassifierFree, cfg_mix, drop_labels
from .losses import diffusion_loss
from .metrics import class_accuracy, evaluate, evaluate_model, frechet_distance, kernel_distance, reference_floor
from .latent import text_to_image
from .nn import ClassifierConfig, DigitClassifier, UNet, UNetConfig, timestep_embedding
from .nn.autoencoder import Autoencoder, AutoencoderConfig
from .objectives import ClassificationConfig, ClassificationObjective, DiffusionConfig, DiffusionObjective
from .pretrained import load_autoencoder, load_classifier, load_diffusion, load_trained
from .samplers import (ddim_invert, ddim_sample, ddim_step, ddpm_sample, ddpm_step, dpm_solver_sample, dpm_solver_step,
                       slerp)
from .schedules import NoiseSchedule, extract, make_schedule
from .train import RunConfig, TrainConfig, Trainer

__version__ = "0.1.0"

# The public names, in the order the course teaches them.
__all__ = [
    # 01–03: the schedule and the forward process
    "NoiseSchedule", "make_schedule", "extract",
    "q_step", "q_chain", "q_sample", "q_posterior",
    "predict_x0_from_eps", "predict_eps_from_x0", "predict_v", "predict_x0_from_v", "predict_eps_from_v",
    "eps_and_x0",
    # 04: the network
    "timestep_embedding", "UNet", "UNetConfig",
    # 05: the objective and training
    "diffusion_loss", "DiffusionConfig", "DiffusionObjective", "ClassificationConfig", "ClassificationObjective",
    "TrainConfig", "RunConfig", "Trainer",
    # 06: sampling
    "ddpm_step", "ddpm_sample", "ddim_step", "ddim_sample", "ddim_invert", "dpm_solver_step", "dpm_solver_sample",
    "slerp",
    # 07: classifier-free guidance
    "ClassifierFree", "cfg_mix", "drop_labels",
    # 08: latent diffusion
    "Autoencoder", "AutoencoderConfig", "text_to_image",
    # data, measures, shipped models
    "mnist", "sklearn_digits", "Shapes", "Scenes", "LabelledImages", "torchvision_dataset",
    "to_model_range", "to_pixel_range",
    "DigitClassifier", "ClassifierConfig",
    "frechet_distance", "kernel_distance", "class_accuracy", "evaluate", "evaluate_model", "reference_floor",
    "load_diffusion", "load_classifier", "load_autoencoder", "load_trained",
    # the modules
    "schedules", "diffusion", "losses", "nn", "objectives", "train", "samplers", "guidance", "latent", "scores",
    "metrics", "data", "images", "checkpoint", "registry", "pretrained",
]
