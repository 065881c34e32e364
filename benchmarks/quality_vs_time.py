"""Quality per GPU-minute: train the mnist_cond recipe and measure the EMA model after 1, 2, … minutes
of training (wall time of the training steps only; compilation counts, evaluation does not).

    python benchmarks/quality_vs_time.py [--minutes 1,2,5] [--compile reduce-overhead | --cuda-graph]
        [--steps N | --budget SECONDS] [--set part.field=value …] [--draws 3] [--ship DIR]

At each mark: 1,000 unguided samples (100 per class; DDIM 50 steps and DDPM's 1,000 by default)
scored by minidiff.metrics (Fréchet distance and KID in the shipped classifier's features, class
accuracy, and the floor).
Training runs the recipe's own step count; a mark past its end reports the finished model.
After the last mark the finished model is also scored with DPM-Solver++ 20 steps and DDPM 1,000.
``--ship DIR`` writes the EMA weights (float16) and a manifest entry to DIR, as
``minidiff.pretrained.save_shipped`` does for the package's checkpoints/ (merge the entry by hand).
"""
from __future__ import annotations

import argparse
import ast
import json
import time
from dataclasses import asdict, replace

import torch

import minidiff as md
from minidiff.pretrained import recipes
from minidiff.pretrained.recipes import RECIPES, Recipe, make_trainer

SAMPLERS = {"DDIM 50": ("ddim", 50), "DPM-Solver++ 20": ("dpm++", 20), "DDPM 1000": ("ddpm", 1000)}


def evaluate(trainer: md.Trainer, sampler: str = "DDIM 50", draws: int = 1) -> dict:
    """The metrics protocol (``md.evaluate_model``) on the EMA model, with one of SAMPLERS."""
    name, steps = SAMPLERS[sampler]
    dtype = torch.bfloat16 if trainer.schedule.device.type == "cuda" else None      # as its figures were measured
    return (md.evaluate_model(trainer.ema, trainer.schedule, name, steps, draws=draws, dtype=dtype)
            | {"sampler": sampler})


def line(minutes: float, step: int, r: dict) -> str:
    return (f"{minutes:4.2f} min, step {step:6d}, {r['sampler']:15s}: FD {r['fd']:.3f} ({r['fd_ratio']:.2f}× floor "
            f"{r['fd_floor']:.3f}), KID {r['kid']:+.4f} ± {r['kid_std']:.4f}, accuracy {r['accuracy']:.1%}")


def ship(trainer: md.Trainer, result: dict, seconds: float, root: str, command: str,
         by_sampler: dict[str, dict]) -> None:
    metrics = {"fd": round(result["fd"], 4), "fd_floor": round(result["fd_floor"], 4),
               "fd_ratio": round(result["fd_ratio"], 3), "kid": round(result["kid"], 6),
               "kid_std": round(result["kid_std"], 6), "kid_floor": round(result["kid_floor"], 6),
               "accuracy": result["accuracy"], "train_seconds": round(seconds), "draws": result["draws"],
               "sampler": "DDIM 50 steps, eta 0, no guidance, 1,000 samples (100 per class)", "command": command,
               "by_sampler": {name: {"fd": round(r["fd"], 4), "fd_ratio": round(r["fd_ratio"], 3),
                                     "accuracy": r["accuracy"]} for name, r in by_sampler.items()}}
    recipes.ship("mnist_cond", trainer, metrics, root=root)


def override(recipe: Recipe, settings: list[str]) -> Recipe:
    """The recipe with fields replaced: each setting is "part.field=value", part one of model, objective
    or train, value a Python literal (e.g. "objective.target='v'", "model.channel_mults=(1, 2, 4)")."""
    for setting in settings:
        key, equals, value = setting.partition("=")
        part, _, name = key.partition(".")
        try:
            if not equals or part not in ("model", "objective", "train") or name not in asdict(getattr(recipe, part)):
                raise ValueError
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise ValueError(f"--set must look like part.field=value with part in model, objective, train, a field "
                             f"of it and a Python literal; got {setting!r}") from None
        recipe = replace(recipe, **{part: replace(getattr(recipe, part), **{name: value})})
    return recipe


def synchronize(trainer: md.Trainer) -> None:
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()


def fit_steps_to_budget(trainer: md.Trainer, budget: float) -> float:
    """Train the warm-up steps, time the second half of them, and set the step count so that training
    ends after ``budget`` seconds in all. The learning rate of a warm-up step does not depend on the
    step count, so this is the run that would have been made with that count from the start."""
    warmup = trainer.cfg.warmup_steps
    start = time.perf_counter()
    trainer.train(steps=warmup // 2)
    synchronize(trainer)
    middle = time.perf_counter()
    trainer.train(steps=warmup - warmup // 2)
    synchronize(trainer)
    end = time.perf_counter()
    rate = (warmup - warmup // 2) / (end - middle)
    trainer.cfg = replace(trainer.cfg, steps=warmup + int((budget - (end - start)) * rate))
    print(f"{rate:.0f} steps/s after warm-up: {trainer.cfg.steps} steps fit {budget:.0f} s", flush=True)
    return end - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", default="1,2,5")
    parser.add_argument("--compile", default="reduce-overhead", help="a torch.compile mode, or '' for none")
    parser.add_argument("--cuda-graph", action="store_true", help="record forward + backward as CUDA graphs "
                                                                 "instead of compiling (implies --compile '')")
    parser.add_argument("--steps", type=int, default=None, help="train this many steps instead of the recipe's")
    parser.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                        help="fit the step count to this much training time, from the speed of the warm-up "
                             "steps (the cosine decay starts after them, so it spans the whole budget)")
    parser.add_argument("--set", action="append", default=[], metavar="PART.FIELD=VALUE",
                        help="change the recipe (repeatable), e.g. --set model.dropout=0.0 "
                             "--set \"objective.target='v'\"")
    parser.add_argument("--draws", type=int, default=1, help="average this many draws of 1,000 samples")
    parser.add_argument("--ship", default=None, metavar="DIR", help="save the finished EMA model here")
    parser.add_argument("--json", default=None, metavar="PATH", help="append every result as a JSON line")
    parser.add_argument("--samplers", default="DDIM 50,DDPM 1000",
                        help="comma-separated, scored at every mark but the last "
                             f"(which scores all of {list(SAMPLERS)})")
    args = parser.parse_args()
    unknown = set(args.samplers.split(",")) - set(SAMPLERS)
    if unknown:
        parser.error(f"--samplers must name samplers among {list(SAMPLERS)}; got {sorted(unknown)}")
    marks = [60 * float(m) for m in args.minutes.split(",")]
    recipe = override(RECIPES["mnist_cond"], args.set)
    if args.cuda_graph:
        args.compile = ""
    run = md.RunConfig(compile=args.compile or False, cuda_graph=args.cuda_graph, progress=False, log_every=100)
    trainer = make_trainer(recipe, run, steps=args.steps)
    trained = fit_steps_to_budget(trainer, args.budget) if args.budget else 0.0
    print(f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}, torch {torch.__version__}, "
          f"recipe mnist_cond{' with ' + ', '.join(args.set) if args.set else ''} "
          f"({trainer.model.num_parameters() / 1e6:.2f}M parameters, {trainer.cfg.steps} steps "
          f"of batch {recipe.train.batch_size}), compile={args.compile!r}, cuda_graph={args.cuda_graph}", flush=True)
    results = []
    for mark in marks:
        while trained < mark and trainer.step < trainer.cfg.steps:
            start = time.perf_counter()
            trainer.train(steps=100)
            synchronize(trainer)
            trained += time.perf_counter() - start
        samplers = args.samplers.split(",") if mark < marks[-1] else list(SAMPLERS)
        for sampler in samplers:
            r = evaluate(trainer, sampler, args.draws) | {"minutes": round(trained / 60, 3), "step": trainer.step}
            results.append(r)
            print(line(trained / 60, trainer.step, r), flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(r) + "\n")
    print(f"trained {trainer.step} steps in {trained:.1f} s "
          f"({trainer.step * recipe.train.batch_size / trained:.0f} img/s including compilation)")
    if args.ship:
        last = {r["sampler"]: r for r in results if r["step"] == trainer.step}
        how = ("--cuda-graph" if args.cuda_graph else f"--compile {args.compile}") + f" --steps {trainer.cfg.steps}" \
            + "".join(f' --set "{setting}"' for setting in args.set)
        ship(trainer, last["DDIM 50"], trained, args.ship, f"python benchmarks/quality_vs_time.py {how} --ship DIR "
             f"(= python -m minidiff train --recipe mnist_cond {how})", last)
        print(f"shipped to {args.ship}")


if __name__ == "__main__":
    main()
