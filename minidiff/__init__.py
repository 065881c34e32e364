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
    s                                       the schedule (a NoiseSchedule): every function and field that takes
                                            one calls it ``s``, never ``schedule`` (a schedule's *name*, as in
                                            DiffusionConfig.schedule = "cosine", is the one exception)
    α_t, σ_t                                √ᾱ_t and √(1 − ᾱ_t): x_t = α_t x_0 + σ_t ε (s.alpha_sigma(t))
    target                                  what a network predicts: "eps" (ε), "x0" or "v" (model.target)
    y, null label                           a condition (class labels, one per attribute, or a caption's ids) and
                                            the label that means "not given" (model.null_label; conditioning.py)
    w                                       the classifier-free guidance scale (guidance.py)

The package, in the order the course teaches it (an import only ever points up this list:
tests/test_architecture.py holds the exact order):

    progress                         the long loops' progress bars (a leaf: on in a notebook, off in a log)
    conditioning                     what a network is given (x_t, t, y) and returns (its target); labels,
                                     null labels, captions, plain CFG, and every check at a public door
    schedules, diffusion, losses     the forward process and the objective      (notebooks 01–03, 05)
    nn/                              timestep embedding, blocks, U-Net, classifier  (04); autoencoder and
                                     text encoder (08), which plugs into the U-Net (nn.text_unet)
    registry                         describe / build / save any model kind
    objectives, train                one Trainer for any model and objective      (05)
    samplers, guidance               DDPM, DDIM, DPM-Solver++; guidance variants  (06, 07)
    latent                           latent diffusion: sampling in an autoencoder's space  (08)
    editing                          SDEdit and inpainting with any trained model           (10)
    pretrained/                      the shipped checkpoints, their loaders, text_to_image, the recipes
    metrics                          Fréchet distance, KID, accuracy in a classifier's features
    data, checkpoint                 MNIST, 8×8 digits, procedural Shapes, all in [-1, 1]; atomic files
    course/                          the course's tooling (a separate import, below)

Checks sit at the door. A public entry point (a sampler loop, the Trainer, diffusion_loss, q_sample…)
checks its inputs once, with an error that names the argument; below it the code is the equations. The
step functions (ddpm_step, ddim_step, dpm_solver_step) are public too, so they keep the few host-side
checks that stop a silently wrong image (a position out of range, a tensor that would broadcast), read
their scalars from the schedule's host tables and never wait on the GPU. Nothing switches precision or
reseeds a random generator behind the caller's back: a sampler runs in bf16 when given
``dtype=torch.bfloat16``; the Trainer draws from its own random stream.

Room for continuous paths (notebook 09 onwards). A discrete schedule and a continuous path are two kinds
of one thing, a **Gaussian path** x_t = α(t)·x_0 + σ(t)·ε, and the code that samples and trains talks to
that, not to β tables:

    path.alpha_sigma(t) -> (α, σ)      NoiseSchedule: t a position 0 … T−1 (−1: the data), α = √ᾱ, σ = √(1 − ᾱ);
                                       a flow-matching path: t ∈ [0, 1], t = 0 data, t = 1 noise, α = 1 − t, σ = t
    model target                       "eps", "x0", "v", and for a flow path "u" = ε − x_0 (the velocity); every
                                       target is affine in (x̂_0, ε̂) given x_t, α, σ, so one conversion
                                       (diffusion.eps_and_x0, to be written in α, σ) turns any into (ε̂, x̂_0)
    how t reaches the network          a position for a schedule, t ∈ [0, 1] (scaled) for a path: the path says
    samplers                           a step needs only (α, σ) at its two ends and (ε̂, x̂_0): ddim_step is written
                                       that way already, and DDIM at η = 0 *is* the Euler step of the flow ODE in
                                       these variables, so flow_sample is a time grid (with its shift) + this step
    conditioning / guidance            labels, null labels, captions and CFG act on the network's output and know
                                       nothing of t: they serve both kinds unchanged (samplers.prepare → Denoiser)
    training                           objectives draw t from the path (uniform positions, or t ~ U[0, 1] / logit-
                                       normal), build x_t with alpha_sigma, and regress the target: one Trainer

``import minidiff`` is the library alone: no plotting, widgets or Jupyter code. The course's tooling
(the profile switch, plots and widgets, exercise checks, the notebook generator) is a separate import,
``import minidiff.course as mc``; the library never imports it.
"""
from . import (
                        checkpoint,
                        data,
                        diffusion,
                        editing,
                        guidance,
                        latent,
                        losses,
                        metrics,
                        nn,
                        objectives,
                        pretrained,
                        progress,
                        registry,
                        samplers,
                        schedules,
                        scores,
                        train,
)
from .data import (
                        LabelledImages,
                        Scenes,
                        Shapes,
                        mnist,
                        sklearn_digits,
                        to_model_range,
                        to_pixel_range,
                        torchvision_dataset,
)
from .diffusion import (
                        eps_and_x0,
                        predict_eps_from_v,
                        predict_eps_from_x0,
                        predict_v,
                        predict_x0_from_eps,
                        predict_x0_from_v,
                        q_chain,
                        q_posterior,
                        q_sample,
                        q_step,
)
from .editing import inpaint, sdedit
from .flow import FlowConfig, FlowObjective, FlowPath, flow_sample
from .guidance import ClassifierFree, cfg_mix, drop_labels
from .losses import diffusion_loss
from .metrics import class_accuracy, evaluate, evaluate_model, frechet_distance, kernel_distance, reference_floor
from .nn import ClassifierConfig, DigitClassifier, UNet, UNetConfig, timestep_embedding
from .nn.autoencoder import Autoencoder, AutoencoderConfig
from .objectives import ClassificationConfig, ClassificationObjective, DiffusionConfig, DiffusionObjective
from .pretrained import generate, load_autoencoder, load_classifier, load_diffusion, load_trained, text_to_image
from .samplers import (
                        ddim_invert,
                        ddim_sample,
                        ddim_step,
                        ddpm_sample,
                        ddpm_step,
                        dpm_solver_sample,
                        dpm_solver_step,
                        slerp,
)
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
    # 09: flow matching
    "FlowPath", "FlowConfig", "FlowObjective", "flow_sample",
    # 10: editing
    "sdedit", "inpaint",
    # data, measures, shipped models
    "mnist", "sklearn_digits", "Shapes", "Scenes", "LabelledImages", "torchvision_dataset",
    "to_model_range", "to_pixel_range",
    "DigitClassifier", "ClassifierConfig",
    "frechet_distance", "kernel_distance", "class_accuracy", "evaluate", "evaluate_model", "reference_floor",
    "load_diffusion", "load_classifier", "load_autoencoder", "load_trained", "generate",
    # the modules
    "conditioning", "schedules", "diffusion", "flow", "losses", "nn", "objectives", "train", "samplers", "guidance",
    "latent", "editing",
    "scores",
    "metrics", "data", "images", "checkpoint", "registry", "pretrained", "progress",
]
