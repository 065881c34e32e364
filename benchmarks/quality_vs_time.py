"""Quality per GPU-minute: train the mnist_cond recipe and measure the EMA model after 1, 2 and 5
minutes of training (wall time of the training steps only; compilation counts, evaluation does not).

    python benchmarks/quality_vs_time.py [--minutes 1,2,5] [--steps 16000] [--compile reduce-overhead]

At each mark: 1,000 unguided samples (100 per class, DDIM 50 steps) scored by minidiff.metrics
(Fréchet distance and KID in the shipped classifier's features, class accuracy, and the floor).
``--steps`` sets the length of the learning-rate schedule; choose it so it ends near the last mark.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

import minidiff as md
from minidiff.recipes import RECIPES, make_trainer


def evaluate(trainer: md.Trainer) -> dict:
    labels = torch.arange(1000, device=trainer.device) % 10
    with torch.no_grad():
        x = torch.cat([md.ddim_sample(trainer.ema, trainer.schedule, (500, 1, 28, 28), steps=50, y=y,
                                      generator=torch.Generator(trainer.device).manual_seed(i))
                       for i, y in enumerate(labels.split(500))])
    return md.evaluate(x.clamp(-1, 1), labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", default="1,2,5")
    parser.add_argument("--steps", type=int, default=16_000)
    parser.add_argument("--compile", default="reduce-overhead")
    args = parser.parse_args()
    marks = [60 * float(m) for m in args.minutes.split(",")]
    recipe = RECIPES["mnist_cond"]
    recipe = replace(recipe, train=replace(recipe.train, steps=args.steps))
    run = md.RunConfig(compile=args.compile or False, progress=False, log_every=100)
    trainer = make_trainer(recipe, run)
    print(f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}, torch {torch.__version__}, "
          f"recipe mnist_cond with {args.steps} scheduled steps, compile={args.compile}")
    trained = 0.0
    for mark in marks:
        while trained < mark and trainer.step < recipe.train.steps:
            start = time.perf_counter()
            trainer.train(steps=100)
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            trained += time.perf_counter() - start
        r = evaluate(trainer)
        print(f"{trained / 60:4.1f} min, step {trainer.step:6d}: FD {r['fd']:.3f} ({r['fd_ratio']:.2f}× floor "
              f"{r['fd_floor']:.3f}), KID {r['kid']:+.4f} ± {r['kid_std']:.4f}, accuracy {r['accuracy']:.1%}", flush=True)


if __name__ == "__main__":
    main()
