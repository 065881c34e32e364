r"""minidiff: a small, readable diffusion-model package, taught by the notebooks beside it.

Notation (one name, one quantity; t is 0-indexed, t ∈ {0, …, T−1}):

    betas            β_t        forward-process variance of step t
    alphas           α_t        1 − β_t           (never ᾱ)
    alphas_cumprod   ᾱ_t        ∏_{s≤t} α_s
    x0, x_t          x_0, x_t   clean image, noised image at step t
    eps / noise      ε          standard Gaussian noise, x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε
    s                           a NoiseSchedule holding those tables
"""
from . import checkpoint, data, diffusion, exercises, losses, metrics, nn, pretrained, profiles, recipes, samplers, schedules, train, viz
from .data import LabelledImages, Shapes, mnist, sklearn_digits, to_model_range, to_pixel_range, torchvision_dataset
from .diffusion import (eps_and_x0, predict_eps_from_v, predict_eps_from_x0, predict_v, predict_x0_from_eps,
                        predict_x0_from_v, q_posterior, q_sample, q_step)
from .losses import diffusion_loss
from .nn import UNet, UNetConfig, timestep_embedding
from .samplers import (ddim_invert, ddim_sample, ddim_step, ddpm_sample, ddpm_step, dpm_solver_sample, dpm_solver_step,
                       slerp)
from .train import DiffusionConfig, RunConfig, TrainConfig, Trainer
from .metrics import DigitClassifier, class_accuracy, evaluate, frechet_distance, kernel_distance, reference_floor
from .pretrained import load_classifier, load_diffusion
from .profiles import by_profile, profile
from .schedules import NoiseSchedule, extract, make_schedule

__version__ = "0.1.0"
