"""Notebook 08's exercises: the reparameterisation and the KL term of the autoencoder."""
from __future__ import annotations

import math
import random
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from ...nn.autoencoder import kl_divergence, reparameterise
from .core import (
    Case,
    Exercise,
    ExerciseError,
    Mistake,
    _advice,
    _first_hint,
    check,
    compare_tensors,
    describe,
    hidden_rng,
    register,
    torch_seed,
)

__all__ = ["HINT_KL", "HINT_REPARAMETERISE", "check_kl_divergence",
           "check_reparameterise"]   # what mc.exercises exports from here


HINT_REPARAMETERISE = ("z = μ + exp(½·logvar)·ε: σ = exp(½·log σ²) is the square root of the variance — "
                       "exp(logvar) would be σ² itself. Use the noise you are given (do not draw your own, and "
                       "do not leave it out: z = μ is the mean, not a sample), and build z from mean and logvar "
                       "with torch operations so that gradients reach both (no .detach(), torch.no_grad or .item()).")

HINT_KL = ("KL = ½ Σ (μ² + σ² − 1 − log σ²) with σ² = exp(logvar) and log σ² = logvar itself: keep the ½, the sign "
           "is minus log σ², and it is σ² (exp(logvar)), not σ (exp(½·logvar)). *Sum* over every latent element of "
           "each image (C·H·W: .flatten(1).sum(dim=1)), not the mean, and not over the batch: return shape (B,).")


def _hidden_reparameterise_settings(rng: random.Random) -> list[tuple]:
    """Drawn (shape, a fixed logvar or None, note): a single latent, a batch, and a fixed logvar with its σ."""
    logvar = rng.choice((1.0, 2.0, -2.0, 3.0))
    return [((1, 1, 1, 1), None, ""), ((rng.randint(2, 6), 4, 2, 2), None, ""),
            ((2, 2, 3, 3), logvar, f" (logvar = {logvar:g}: σ = {math.exp(logvar / 2):.4g})")]


def check_reparameterise(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(mean, logvar, noise) -> z`` against ``nn.autoencoder.reparameterise`` with the same ε, and
    that gradients reach mean and logvar."""
    rng = hidden_rng("reparameterise") if hidden else None
    settings = (_hidden_reparameterise_settings(rng) if rng else
                [((2, 4, 8, 8), None, ""), ((3, 4, 4, 4), None, ""), ((1, 2, 16, 16), None, ""),
                 ((2, 4, 4, 4), 0.0, " (logvar = 0: σ = 1, so z = μ + ε)"),
                 ((2, 3, 4, 4), -60.0, " (logvar = −60: σ ≈ 1e-13, so z ≈ μ)")])
    cases = []
    for seed, (shape, fixed, note) in enumerate(settings, start=torch_seed(rng) if rng else 0):
        g = torch.Generator().manual_seed(seed)
        mean, noise = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        logvar = torch.full(shape, fixed) if fixed is not None else 4 * torch.rand(shape, generator=g) - 3
        inputs = dict(mean=mean, logvar=logvar, noise=noise)
        cases.append(Case(describe(**inputs) + note, tuple(inputs.values())))

    def reference(mean: Tensor, logvar: Tensor, noise: Tensor) -> Tensor:
        return reparameterise(mean, logvar, noise)

    def with_gradients(mean: Tensor, logvar: Tensor, noise: Tensor) -> Any:
        """``fn``'s z; when its values are right, also that z.sum() has a gradient for mean and for logvar."""
        leaves = mean.clone().requires_grad_(True), logvar.clone().requires_grad_(True)
        z = fn(*leaves, noise)
        again = fn(mean.clone(), logvar.clone(), noise.clone())
        if (isinstance(z, Tensor) and isinstance(again, Tensor) and z.shape == again.shape
                and not torch.equal(z.detach(), again)):
            random_z.append(True)                   # two different z for the same inputs: its own noise
        if not isinstance(z, Tensor) or compare_tensors(reference(mean, logvar, noise), z.detach(), 1e-5, 1e-4):
            return z.detach() if isinstance(z, Tensor) else z          # wrong values: ``check`` explains them
        missing = [name for name, leaf in zip(("mean", "logvar"), leaves) if _gradient(z, leaf) is None]
        if missing:
            raise ExerciseError(f"reparameterise gives the right values, but no gradient reaches "
                                f"{' or '.join(missing)}: z must be computed from them with torch operations, so "
                                f"that training can move the encoder's outputs.\n"
                                f"  Hint: {_first_hint('reparameterise')}{_advice('reparameterise')}", "reparameterise")
        return z.detach()
    random_z: list[bool] = []
    try:
        checked = check("reparameterise", with_gradients, reparameterise, cases, _first_hint("reparameterise"),
                        hidden=hidden, learner=fn)
    except ExerciseError as error:
        if not random_z:
            raise
        head, hint, rest = str(error).partition("\n  Hint: ")
        raise ExerciseError(f"{head}\n  This looks like a common mistake: {_OWN_NOISE}.{hint}{rest}",
                            "reparameterise") from error
    return fn if checked is with_gradients else checked


_OWN_NOISE = ("you drew your own noise (torch.randn_like), so the same inputs give a different z each call; use the "
              "noise argument: z = μ + σ·noise, with ε drawn by the caller")


def _gradient(z: Tensor, leaf: Tensor) -> Optional[Tensor]:
    """∂(Σ z)/∂leaf, or None when z does not depend on ``leaf`` through autograd."""
    if not z.requires_grad:
        return None
    return torch.autograd.grad(z.sum(), leaf, retain_graph=True, allow_unused=True)[0]


def check_kl_divergence(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(mean, logvar) -> (B,)``, the KL divergence to N(0, I) per image, against
    ``nn.autoencoder.kl_divergence``: zero at the standard normal, two closed-form values, random latents."""
    log4 = torch.log(torch.tensor(4.0)).item()
    settings = [((2, 4, 8, 8), 0.0, 0.0, " (μ = 0, σ² = 1: the standard normal itself, KL = 0)"),
                ((3, 2, 4, 4), 1.0, 0.0, " (μ = 1, σ² = 1: KL = ½·μ²·C·H·W = 16 per image)"),
                ((2, 1, 4, 4), 0.0, log4,
                 f" (μ = 0, σ² = 4: KL = ½·(4 − 1 − log 4)·16 = {8 * (3 - log4):.4g} per image)"),
                ((4, 4, 8, 8), None, None, ""), ((2, 8, 16, 16), None, None, "")]
    rng = hidden_rng("kl_divergence") if hidden else None
    if rng:                                          # drawn: one latent with a closed-form KL, two random batches
        mu = float(rng.randint(1, 4))
        settings = [((1, 1, 1, 1), mu, 0.0, f" (μ = {mu:g}, σ² = 1: KL = ½·μ² = {mu * mu / 2:g})"),
                    ((rng.randint(2, 4), 4, 4, 4), None, None, ""), ((2, 2, 2, 2), None, None, "")]
    cases = []
    for seed, (shape, mu, logvar, note) in enumerate(settings, start=torch_seed(rng) if rng else 0):
        g = torch.Generator().manual_seed(seed)
        mean = torch.full(shape, mu) if mu is not None else torch.randn(shape, generator=g)
        lv = torch.full(shape, logvar) if logvar is not None else 4 * torch.rand(shape, generator=g) - 3
        cases.append(Case(describe(mean=mean, logvar=lv) + note, (mean, lv)))
    return check("kl_divergence", fn, kl_divergence, cases, _first_hint("kl_divergence"), atol=1e-4, rtol=1e-4,
                 hidden=hidden)


REPARAMETERISE_MISTAKES = (
    Mistake("you used exp(logvar) as σ, but exp(logvar) is the variance σ²; σ = exp(½·logvar)",
            lambda mean, logvar, noise: mean + torch.exp(logvar) * noise),
    Mistake("you used logvar itself as σ; σ = exp(½·logvar)", lambda mean, logvar, noise: mean + logvar * noise),
    Mistake("z = μ is the mean, not a sample: add σ·noise", lambda mean, logvar, noise: mean.clone()),
    Mistake("mean and noise are swapped: z = mean + σ·noise",
            lambda mean, logvar, noise: noise + torch.exp(0.5 * logvar) * mean),
)


def _kl_with(reduce: str = "sum", half: float = 0.5, log_sign: int = -1, variance: Callable = torch.exp,
             over_batch: bool = False) -> Callable:
    def wrong(mean: Tensor, logvar: Tensor) -> Tensor:
        per_element = half * (mean ** 2 + variance(logvar) - 1 + log_sign * logvar)
        per_image = per_element.flatten(1).sum(dim=1) if reduce == "sum" else per_element.flatten(1).mean(dim=1)
        return per_image.sum() if over_batch else per_image
    return wrong


KL_MISTAKES = (
    Mistake("you averaged over each image's latent elements (.mean); the KL sums them", _kl_with(reduce="mean")),
    Mistake("the ½ is missing", _kl_with(half=1.0)),
    Mistake("the sign of log σ² is wrong: it is − log σ² = − logvar", _kl_with(log_sign=+1)),
    Mistake("you used σ = exp(½·logvar) where the formula has σ² = exp(logvar)",
            _kl_with(variance=lambda logvar: torch.exp(0.5 * logvar))),
    Mistake("you summed over the batch too; return one value per image, shape (B,)", _kl_with(over_batch=True)),
)


register(
    Exercise("reparameterise", "reparameterise", reparameterise, (
        "A sample of N(μ, σ²) is μ plus σ times standard noise; the encoder gives log σ², so get σ from it — with "
        "torch operations on mean and logvar, so that gradients reach both.",
        HINT_REPARAMETERISE,
        "σ = torch.exp(0.5 * logvar); return mean + σ * noise."),
        REPARAMETERISE_MISTAKES, ("minidiff.nn.autoencoder.reparameterise",)),
    Exercise("kl_divergence", "kl_divergence", kl_divergence, (
        "The KL divergence of N(μ, σ²) from N(0, 1) has a closed form per latent element, zero at μ = 0, σ² = 1; "
        "add it up over each image's elements, one value per image.",
        HINT_KL,
        "0.5 * (mean ** 2 + logvar.exp() − 1 − logvar), then .flatten(1).sum(dim=1)."),
        KL_MISTAKES, ("minidiff.nn.autoencoder.kl_divergence",)),
)
