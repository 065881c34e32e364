"""Sampling speed on one GPU: 10,000 class-conditional 28×28 samples with DPM-Solver++(2M), 20
steps, bf16, batched, with the shipped model. Prints minidiff's sampler and diffusers'
DPMSolverMultistepScheduler driving the same model, and the ratio.

    python benchmarks/sampling_speed.py [--n 10000] [--batch 2500] [--steps 20] [--modes eager,compile] [--device cpu]

Each mode runs both loops around the same network: "eager" as it is, "compile" after torch.compile
(default mode; the first, untimed run compiles). The peer's loop is diffusers' scheduler stepping on
our network's predictions (v for the shipped model: the scheduler's prediction_type="v_prediction"), so
the ratio measures the sampler code around the network, not the network.

diffusers must be importable (carry its wheel to a bare GPU box: see scripts/fetch_gpu_wheels.sh).
"""
from __future__ import annotations

import argparse
import time

import torch

import minidiff as md

PREDICTION_TYPE = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}   # diffusers' names for our targets


def ours(model, s, labels: torch.Tensor, steps: int, batch: int, target: str) -> torch.Tensor:
    g = torch.Generator(labels.device).manual_seed(0)
    dtype = torch.bfloat16 if labels.is_cuda else None           # bf16 autocast on CUDA, as the peer below
    return torch.cat([md.dpm_solver_sample(model, s, (len(y), 1, 28, 28), steps=steps, y=y, generator=g, target=target,
                                           dtype=dtype)
                      for y in labels.split(batch)])


def peer(model, s, labels: torch.Tensor, steps: int, batch: int, target: str) -> torch.Tensor:
    from diffusers import DPMSolverMultistepScheduler
    scheduler = DPMSolverMultistepScheduler(num_train_timesteps=s.num_steps, trained_betas=s.betas.cpu().numpy(),
                                            algorithm_type="dpmsolver++", solver_order=2,
                                            timestep_spacing="trailing", final_sigmas_type="zero",
                                            prediction_type=PREDICTION_TYPE[target])
    g = torch.Generator(labels.device).manual_seed(0)
    out = []
    for y in labels.split(batch):
        scheduler.set_timesteps(steps, device=labels.device)
        x = torch.randn(len(y), 1, 28, 28, device=labels.device, generator=g)
        for t in scheduler.timesteps:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=labels.is_cuda):
                prediction = model(x, t.expand(len(y)), y).float()
            x = scheduler.step(prediction, t, x).prev_sample
        out.append(x)
    return torch.cat(out)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, model, s, labels: torch.Tensor, *args) -> tuple[float, torch.Tensor]:
    fn(model, s, labels, *args)                         # warm-up (and compilation)
    synchronize(labels.device)
    start = time.perf_counter()
    x = fn(model, s, labels, *args)
    synchronize(labels.device)
    return time.perf_counter() - start, x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=2500)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--modes", default="eager,compile", help="comma-separated: eager, compile")
    parser.add_argument("--device", default="cuda", help="cuda (bf16 autocast), or cpu (float32) to check the loops")
    args = parser.parse_args()
    device = torch.device(args.device)
    eager, s, diffusion = md.load_diffusion("mnist_cond", device=device)
    labels = torch.arange(args.n, device=device) % 10
    machine = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"{machine}, torch {torch.__version__}: {args.n} samples, {args.steps} steps, batch {args.batch}, "
          f"{'bf16 autocast' if device.type == 'cuda' else 'float32'}, target {diffusion.target!r}, "
          f"{sum(p.numel() for p in eager.parameters()) / 1e6:.2f}M parameters")
    results = {}
    samples = {}
    for mode in args.modes.split(","):
        model = torch.compile(eager) if mode == "compile" else eager
        for name, fn in (("minidiff", ours), ("diffusers scheduler", peer)):
            seconds, x = timed(fn, model, s, labels, args.steps, args.batch, diffusion.target)
            results[(name, mode)], samples[(name, mode)] = seconds, x
            accuracy = md.class_accuracy(x[:1000].clamp(-1, 1), labels[:1000])
            print(f"{name:20s} {mode:8s} {seconds:6.2f} s   {args.n / seconds:8.0f} samples/s   "
                  f"accuracy {accuracy:.1%}", flush=True)
        difference = (samples[("diffusers scheduler", mode)] - samples[("minidiff", mode)]).abs().max().item()
        print(f"{mode}: diffusers scheduler / minidiff = "
              f"{results[('diffusers scheduler', mode)] / results[('minidiff', mode)]:.2f}× "
              f"(same noise: samples differ by at most {difference:.1e})")
    best = min(results, key=results.get)
    print(f"fastest: {best[0]} ({best[1]}) {results[best]:.2f} s")


if __name__ == "__main__":
    main()
