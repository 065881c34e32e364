"""Notebook 07's exercises: the guided prediction, label dropout and rescaled guidance."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from .core import (
    Case,
    Exercise,
    ExerciseError,
    Mistake,
    _advice,
    _first_hint,
    check,
    check_properties,
    compare_tensors,
    describe,
    hidden_rng,
    register,
    torch_seed,
)

__all__ = ["HINT_DROP_LABELS", "HINT_GUIDED_PREDICTION", "HINT_RESCALED", "check_drop_labels",
           "check_guided_prediction", "check_rescaled_guidance"]   # what mc.exercises exports from here


HINT_GUIDED_PREDICTION = ("One forward pass: out = model(torch.cat([x_t, x_t]), torch.cat([t, t]), "
                          "torch.cat([y, null])) with null = torch.full_like(y, null_label); cond, uncond = "
                          "out.chunk(2); return uncond + w·(cond − uncond) — w multiplies the difference "
                          "(conditional minus unconditional), and w = 0 must give the unconditional output.")

HINT_DROP_LABELS = ("Draw one uniform number per label (torch.rand(y.shape, device=y.device)); where it is below "
                    "p_uncond put null_label, elsewhere keep y (torch.where). Return a new tensor: each label is "
                    "dropped on its own, not the whole batch at once, and y itself is left unchanged.")

HINT_RESCALED = ("x_cfg = uncond + w·(cond − uncond); σ(·) is each image's standard deviation over all its "
                 "values (x.flatten(1).std(dim=1), reshaped to (B, 1, 1, 1)), not the batch's; "
                 "x_re = x_cfg·σ(cond)/σ(x_cfg); return φ·x_re + (1 − φ)·x_cfg.")


class _TinyConditional(torch.nn.Module):
    """A small deterministic stand-in for a conditional U-Net: a conv plus a per-label offset. It
    records the batch size of every call, so a check can tell one batched pass from two."""

    description = "a small stand-in for a conditional U-Net (a convolution plus a per-label offset)"

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.label = torch.nn.Embedding(num_classes + 1, channels)
        self.calls: list[int] = []

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        self.calls.append(x.shape[0])
        return self.conv(x) * (1 + t.float().view(-1, 1, 1, 1) / 1000) + self.label(y)[:, :, None, None]


def check_guided_prediction(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(model, x_t, t, y, null_label, w) -> ε̃`` against ``cfg_mix`` of the conditional and the
    null-label output, and that it calls the model once, on the batch of 2B."""
    rng = hidden_rng("guided_prediction") if hidden else None   # hidden: one image with w > 1, a batch with w < 1
    settings = ([(1, rng.randint(1, 3), rng.randint(2, 5), round(rng.uniform(1.5, 4.0), 2)),
                 (rng.randint(4, 7), rng.randint(1, 2), rng.randint(2, 5), round(rng.uniform(0.2, 0.9), 2))] if rng else
                [(2, 1, 6, 3.0), (3, 3, 4, 0.0), (4, 1, 8, 1.0), (5, 2, 4, 7.5)])        # (B, C, H = W, w)
    cases = []
    with torch.random.fork_rng(devices=[]):
        for seed, (b, c, hw, w) in enumerate(settings, start=torch_seed(rng) if rng else 0):
            torch.manual_seed(seed)
            model, x_t = _TinyConditional(c, 10), torch.randn(b, c, hw, hw)
            t, y = torch.randint(0, 1000, (b,)), torch.randint(0, 10, (b,))
            inputs = dict(model=model, x_t=x_t, t=t, y=y, null_label=10, w=w)
            cases.append(Case(describe(**inputs), tuple(inputs.values())))

    def one_pass(model, x_t, t, y, null_label, w):
        model.calls.clear()
        out = fn(model, x_t, t, y, null_label, w)
        if model.calls != [2 * len(x_t)]:
            raise ExerciseError(f"guided_prediction called the model {len(model.calls)} time(s), on batches of "
                                f"{model.calls}, for {len(x_t)} images; it should call it once, on the batch of "
                                f"{2 * len(x_t)} (conditional and unconditional together).\n"
                                f"  Hint: {_first_hint('guided_prediction')}{_advice('guided_prediction')}",
                                "guided_prediction")
        return out
    checked = check("guided_prediction", one_pass, _reference_guided_prediction, cases,
                    _first_hint("guided_prediction"), hidden=hidden, learner=fn)
    return fn if checked is one_pass else checked


def _reference_guided_prediction(model: Callable, x_t: Tensor, t: Tensor, y: Tensor, null_label: int,
                                 w: float) -> Tensor:
    from ...guidance import cfg_mix
    both = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null_label)]))
    return cfg_mix(*both.chunk(2), w)


def check_drop_labels(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(y, p_uncond, null_label) -> labels`` (random) by its properties: p = 0 and p = 1, the
    fraction dropped, each label dropped on its own, kept labels unchanged, y itself untouched."""
    y = torch.arange(40_000) % 10

    def same_labels(p: float, expected: Tensor, what: str) -> Callable[[Callable], Optional[str]]:
        def test(f: Callable) -> Optional[str]:
            problem = compare_tensors(expected, f(y.clone(), p, 10), 0, 0)
            return problem and f"with p_uncond={p} {what}: {problem}"
        return test

    def fraction(f: Callable) -> Optional[str]:
        out = f(y.clone(), 0.25, 10)
        if not isinstance(out, Tensor) or out.shape != y.shape or out.dtype != y.dtype:
            return (f"expected a {y.dtype} tensor of shape {tuple(y.shape)}; got "
                    f"{getattr(out, 'dtype', type(out).__name__)} {tuple(getattr(out, 'shape', ()))}")
        kept, dropped = out == y, out == 10
        if not bool((kept | dropped).all()):
            return "some labels were changed to something other than the null label 10"
        share = dropped.float().mean().item()
        if not 0.24 <= share <= 0.26:
            whole = " (0 or 1: the whole batch was dropped at once?)" if share in (0.0, 1.0) else ""
            return f"with p_uncond=0.25, {share:.1%} of 40,000 labels were dropped{whole}; expected about 25%"
        per_class = [dropped[y == k].float().mean().item() for k in range(10)]
        if max(per_class) - min(per_class) > 0.04:
            return (f"the share dropped differs by class ({min(per_class):.1%} to {max(per_class):.1%}); "
                    f"every label should be dropped with the same probability")
        return None

    def independent(f: Callable) -> Optional[str]:
        a, b = f(y.clone(), 0.5, 10), f(y.clone(), 0.5, 10)
        return ("two calls dropped exactly the same labels: draw fresh random numbers each call"
                if torch.equal(a, b) else None)

    def untouched(f: Callable) -> Optional[str]:
        labels = y.clone()
        f(labels, 0.5, 10)
        return ("y itself was modified (in place); return a new tensor and leave y as it was"
                if not torch.equal(labels, y) else None)

    def other_rate(p: float, null: int) -> Callable[[Callable], Optional[str]]:
        def test(f: Callable) -> Optional[str]:
            out = f(y.clone(), p, null)
            if not isinstance(out, Tensor) or out.shape != y.shape:
                return (f"expected a tensor of shape {tuple(y.shape)}; got "
                        f"{type(out).__name__} {tuple(getattr(out, 'shape', ()))}")
            if not bool(((out == y) | (out == null)).all()):
                return f"some labels were changed to something other than the null label {null}"
            share = (out == null).float().mean().item()          # its sd is at most 0.25 % with 40,000 labels
            if abs(share - p) <= 0.01:
                return None
            return f"{share:.1%} of 40,000 labels were dropped; expected about {p:.0%}"
        return test

    properties = [("p_uncond=0 keeps every label", same_labels(0.0, y, "every label should be kept")),
                  ("p_uncond=1 drops every label",
                   same_labels(1.0, torch.full_like(y, 10), "every label should be the null label")),
                  ("p_uncond=0.25 drops about a quarter of the labels, each on its own", fraction),
                  ("each call draws anew", independent),
                  ("y itself is left unchanged", untouched)]
    if hidden:                                      # a drawn rate and null label
        rng = hidden_rng("drop_labels")
        p, null = round(rng.uniform(0.3, 0.8), 2), rng.randint(11, 200)
        properties = [(f"p_uncond={p} with null label {null} drops about {p:.0%} of the labels", other_rate(p, null))]
    return check_properties("drop_labels", fn, _reference_drop_labels, properties, _first_hint("drop_labels"),
                            hidden=hidden)


def _reference_drop_labels(y: Tensor, p_uncond: float, null_label: int) -> Tensor:
    from ...guidance import drop_labels
    return drop_labels(y, p_uncond, null_label)


def check_rescaled_guidance(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(cond, uncond, w, phi) -> guided`` against ``guidance.Rescaled(w, phi)`` (Lin et al. 2024)."""
    rng = hidden_rng("rescaled_guidance") if hidden else None    # hidden: one image, w = 0, a large w
    shape = lambda: (rng.randint(1, 5), rng.randint(1, 3), rng.randint(3, 5), rng.randint(3, 5))
    settings = ([((1, 1, 4, 4), round(rng.uniform(1.5, 3.0), 2), round(rng.uniform(0.1, 0.5), 2)),
                 (shape(), 0.0, round(rng.uniform(0.5, 0.8), 2)),
                 (shape(), round(rng.uniform(8.0, 15.0), 1), round(rng.uniform(0.8, 1.0), 2))] if rng else
                [((2, 1, 8, 8), 3.0, 0.7), ((3, 3, 4, 4), 7.5, 1.0), ((2, 1, 6, 6), 5.0, 0.0),
                 ((4, 2, 4, 4), 1.0, 0.5)])
    cases = []
    for seed, (shape, w, phi) in enumerate(settings, start=torch_seed(rng) if rng else 0):
        g = torch.Generator().manual_seed(seed)
        scale = torch.logspace(-1, 1, shape[0]).view(-1, 1, 1, 1)        # images of very different spread
        cond, uncond = scale * torch.randn(shape, generator=g), scale * torch.randn(shape, generator=g)
        inputs = dict(cond=cond, uncond=uncond, w=w, phi=phi)
        cases.append(Case(describe(**inputs), tuple(inputs.values())))

    return check("rescaled_guidance", fn, _reference_rescaled_guidance, cases, _first_hint("rescaled_guidance"),
                 hidden=hidden)


def _reference_rescaled_guidance(cond: Tensor, uncond: Tensor, w: float, phi: float) -> Tensor:
    from ...guidance import Rescaled
    return Rescaled(w, phi)(cond, uncond, 0, cond)


def _guided_with(mix: Callable) -> Callable:
    def wrong(model: Callable, x_t: Tensor, t: Tensor, y: Tensor, null_label: int, w: float) -> Tensor:
        both = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null_label)]))
        return mix(*both.chunk(2), w)
    return wrong


def _null_label_zero(model: Callable, x_t: Tensor, t: Tensor, y: Tensor, null_label: int, w: float) -> Tensor:
    both = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([y, torch.zeros_like(y)]))
    cond, uncond = both.chunk(2)
    return uncond + w * (cond - uncond)


GUIDED_PREDICTION_MISTAKES = (
    Mistake("you started from the conditional output: cond + w·(cond − uncond) = (1 + w)·cond − w·uncond is Ho & "
            "Salimans' own form (their eq. 6), whose w is this notebook's w − 1; here w counts from the unconditional "
            "output, as in Imagen and diffusers: uncond + w·(cond − uncond), so that w = 0 gives the unconditional "
            "output and w = 1 the conditional one", _guided_with(lambda c, u, w: c + w * (c - u))),
    Mistake("the halves are swapped: the first half of the output is the conditional one (y came first)",
            _guided_with(lambda c, u, w: c + w * (u - c))),
    Mistake("the unconditional half used label 0, which is the digit 0; the null label ∅ is null_label (10 for "
            "the digits), the extra row the model was trained with", _null_label_zero),
)


def _rescaled_with(spread: Callable = lambda x: x.flatten(1).std(dim=1).view(-1, *[1] * (x.ndim - 1)),
                   swap_phi: bool = False, inverted: bool = False, of_uncond: bool = False) -> Callable:
    def wrong(cond: Tensor, uncond: Tensor, w: float, phi: float) -> Tensor:
        guided = uncond + w * (cond - uncond)
        target = spread(uncond if of_uncond else cond)
        rescaled = guided * (spread(guided) / target if inverted else target / spread(guided))
        return (1 - phi) * rescaled + phi * guided if swap_phi else phi * rescaled + (1 - phi) * guided
    return wrong


RESCALED_MISTAKES = (
    Mistake("σ was taken over the whole batch (x.std()); it is each image's own standard deviation, "
            "x.flatten(1).std(dim=1) shaped (B, 1, 1, 1)", _rescaled_with(spread=lambda x: x.std())),
    Mistake("φ and 1 − φ are swapped: φ weights the rescaled output", _rescaled_with(swap_phi=True)),
    Mistake("the ratio is upside down: x_re = x_cfg·σ(cond)/σ(x_cfg)", _rescaled_with(inverted=True)),
    Mistake("you rescaled towards σ(uncond); it is σ(cond)", _rescaled_with(of_uncond=True)),
    Mistake("σ was taken per channel (over the height and width only); it is each image's standard deviation over "
            "all its values, channels included: x.flatten(1).std(dim=1)",
            _rescaled_with(spread=lambda x: x.std(dim=(2, 3), keepdim=True))),
)


register(
    Exercise("guided_prediction", "guided_prediction", _reference_guided_prediction, (
        "Run the model once on a batch holding every image twice — with its label and with the null label — "
        "split the output into its conditional and unconditional halves, and move from the unconditional one "
        "w times the difference.",
        HINT_GUIDED_PREDICTION,
        "null = torch.full_like(y, null_label); cond, uncond = model(torch.cat([x_t, x_t]), torch.cat([t, t]), "
        "torch.cat([y, null])).chunk(2); return uncond + w * (cond − uncond)."),
        GUIDED_PREDICTION_MISTAKES, ("minidiff.guidance.guided_output",)),
    Exercise("drop_labels", "drop_labels", _reference_drop_labels, (
        "Each label, on its own, becomes the null label with probability p_uncond; the others stay as they are, "
        "in a new tensor.",
        HINT_DROP_LABELS,
        "drop = torch.rand(y.shape, device=y.device) < p_uncond; then torch.where(drop, "
        "torch.full_like(y, null_label), y)."),
        (), ("minidiff.guidance.drop_labels",)),
    Exercise("rescaled_guidance", "rescaled_guidance", _reference_rescaled_guidance, (
        "Plain guidance spreads each image's values too wide: rescale each guided image to the spread of its "
        "conditional output, then blend the rescaled and the plain result with phi.",
        HINT_RESCALED,
        "guided = uncond + w * (cond − uncond); std = lambda x: x.flatten(1).std(dim=1).view(-1, *[1] * "
        "(x.ndim − 1)); rescaled = guided * std(cond) / std(guided); return phi * rescaled + (1 − phi) * guided."),
        RESCALED_MISTAKES, ("minidiff.guidance.Rescaled",)),
)
