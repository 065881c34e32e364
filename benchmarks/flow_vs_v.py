"""Flow matching against v-diffusion on MNIST, same U-Net (mnist_cond's), same step count and batch:
FD/floor and accuracy at 1, 2, 4, 8, 16, 32 network calls (NFE), then one reflow and its 1- and 2-step samples.

    python benchmarks/flow_vs_v.py [--steps 6106] [--time uniform|logit_normal] [--draws 3]
        [--reflow-pairs 50000] [--reflow-steps 3000] [--out DIR]

The flow model: the mnist_flow recipe's network, mnist_cond's U-Net with ``time_scale`` 1000 (it sees t·1000, so its
sinusoidal embedding spans the same frequencies as for the diffusion model's positions 0…999; the run of 2026-12-06
did the same with a wrapper, before the U-Net had the field), the package's FlowObjective: loss
‖u_θ(x_t, t, y) − (ε − x₀)‖², labels dropped with p = 0.1; mnist_cond's TrainConfig (6,106 steps,
batch 256, lr 1e-3, EMA 0.999) through the same Trainer (bf16, CUDA graphs). The v-model: the shipped
mnist_cond (trained by that recipe), sampled with DDIM
and DPM-Solver++(2M). FD in the shipped classifier's features on n = 1,000 (100 per class), mean of
``--draws`` draws; no guidance. NFE counts network calls: Euler k steps = k, Heun k steps = 2k − 1 (its row
shows the k with 2k − 1 ≤ the column's NFE).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

import minidiff as md
from minidiff import flow
from minidiff.pretrained.recipes import RECIPES

NFES = (1, 2, 4, 8, 16, 32)
DEVICE = "cuda"
N = 1000


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def labels() -> Tensor:
    return torch.arange(N) % 10


def score_flow(model, nfe: int, solver: str, draws: int, shift: float = 1.0) -> Optional[dict]:
    steps = nfe if solver == "euler" else max(1, (nfe + 1) // 2)     # Heun: k steps cost 2k − 1 ≤ nfe calls
    results = []
    for d in range(draws):
        y = labels().to(DEVICE)
        x = flow.flow_sample(model, (N, 1, 28, 28), steps=steps, y=y, solver=solver, shift=shift,
                             generator=torch.Generator(DEVICE).manual_seed(d))
        results.append(md.evaluate(x.clamp(-1, 1).float().cpu(), y.cpu()))
    return mean(results)


def score_v(model, schedule, nfe: int, sampler: str, draws: int) -> dict:
    if N == 1000:
        return md.evaluate_model(model, schedule, sampler, nfe, draws=draws)
    results = []
    for d in range(draws):
        y = labels().to(DEVICE)
        sample = md.ddim_sample if sampler == "ddim" else md.dpm_solver_sample
        x = sample(model, schedule, (N, 1, 28, 28), steps=nfe, y=y, generator=torch.Generator(DEVICE).manual_seed(d))
        results.append(md.evaluate(x.clamp(-1, 1).float().cpu(), y.cpu()))
    return mean(results)


def mean(results: list[dict]) -> dict:
    return {k: sum(r[k] for r in results) / len(results) for k in ("fd", "fd_ratio", "accuracy")}


def train_flow(steps: int, time_sampling: str, images: Tensor, y: Tensor, init: Optional[nn.Module] = None,
               pairs: bool = False, lr: Optional[float] = None) -> tuple[nn.Module, float]:
    recipe = RECIPES["mnist_flow"]
    model = md.UNet(recipe.model) if init is None else init.train().requires_grad_(True)
    train = recipe.train.__class__(**{**recipe.train.__dict__, "steps": steps, **({"lr": lr} if lr else {}),
                                       **({"warmup_steps": 100} if init is not None else {})})
    config = md.FlowConfig(time=time_sampling, p_uncond=0.1)
    objective = flow.ReflowObjective(config) if pairs else md.FlowObjective(config)
    trainer = md.Trainer(model, images, y, train, objective=objective,
                         run=md.RunConfig(device=DEVICE, bf16=True, cuda_graph=DEVICE == "cuda", log_every=500,
                                          progress=False))
    sync()
    start = time.perf_counter()
    trainer.train()
    sync()
    seconds = time.perf_counter() - start
    last = [round(loss, 4) for _, loss in trainer.loss_history[-3:]]
    print(f"trained {steps} steps in {seconds:.1f} s; last losses {last}",
          flush=True)
    return trainer.ema.eval(), seconds


def table(rows: dict[str, dict[int, Optional[dict]]]) -> None:
    print("FD / floor (accuracy) at each NFE; mean of the draws")
    print(f"{'':28s}" + "".join(f"{n:>16d}" for n in NFES))
    for name, by_nfe in rows.items():
        cells = [f"{r['fd_ratio']:7.2f} ({r['accuracy']:.1%})" if r else f"{'—':>16s}" for r in
                 (by_nfe.get(n) for n in NFES)]
        print(f"{name:28s}" + "".join(f"{c:>16s}" for c in cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6106)
    parser.add_argument("--time", choices=("uniform", "logit_normal"), default="logit_normal")
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--reflow-pairs", type=int, default=50_000)
    parser.add_argument("--reflow-pair-steps", type=int, default=16, help="Heun steps per pair (NFE 2k − 1)")
    parser.add_argument("--reflow-steps", type=int, default=3000)
    parser.add_argument("--out", default=None, help="folder for results.json and the flow model's weights")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--n", type=int, default=1000, help="samples per draw (the metrics' protocol: 1,000)")
    args = parser.parse_args()
    global DEVICE, N
    DEVICE, N = args.device, args.n
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    machine = torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE
    print(f"{machine}, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    data = md.mnist("train")
    model, seconds = train_flow(args.steps, args.time, data.images, data.labels)
    rows: dict[str, dict[int, Optional[dict]]] = {}
    for solver in ("euler", "heun"):
        for shift in (1.0, 3.0):
            name = f"flow {solver}{' (2k-1)' if solver == 'heun' else ''} shift {shift:g}"
            rows[name] = {n: score_flow(model, n, solver, args.draws, shift) for n in NFES}
        table(rows)
    v_model, schedule, _ = md.load_diffusion("mnist_cond", device=DEVICE)
    for sampler in ("ddim", "dpm++"):
        rows[f"v-diffusion {sampler}"] = {n: score_v(v_model, schedule, n, sampler, args.draws) for n in NFES}
    table(rows)
    results = {"flow_train_seconds": seconds, "steps": args.steps, "time": args.time, "rows": rows}

    # Reflow: pairs (ε, x̂₀ = ODE(ε)) from the flow model, then the same network trained on straight lines.
    start = time.perf_counter()
    n, batch = args.reflow_pairs, min(2500, args.reflow_pairs)
    g = torch.Generator(DEVICE).manual_seed(123)
    x0s, epss, ys = [], [], []
    for i in range(0, n, batch):
        y = (torch.arange(i, i + batch) % 10).to(DEVICE)
        eps = torch.randn(batch, 1, 28, 28, device=DEVICE, generator=g)
        x0s.append(flow.flow_integrate(model, eps, args.reflow_pair_steps, y, solver="heun").clamp(-1, 1))
        epss.append(eps)
        ys.append(y)
    sync()
    pair_seconds = time.perf_counter() - start
    print(f"{n} reflow pairs (Heun {args.reflow_pair_steps} steps) in {pair_seconds:.1f} s", flush=True)
    pairs = torch.cat([torch.cat(x0s), torch.cat(epss)], dim=1).cpu()
    import copy
    reflowed, reflow_seconds = train_flow(args.reflow_steps, "uniform", pairs, torch.cat(ys).cpu(),
                                          init=copy.deepcopy(model), pairs=True, lr=2e-4)
    rows["reflow euler"] = {k: score_flow(reflowed, k, "euler", args.draws) for k in NFES}
    table(rows)
    results.update(reflow_pair_seconds=pair_seconds, reflow_train_seconds=reflow_seconds)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
        torch.save({k: v.half() for k, v in model.state_dict().items()}, out / "mnist_flow_unet.pt")
        torch.save({k: v.half() for k, v in reflowed.state_dict().items()}, out / "mnist_reflow_unet.pt")


if __name__ == "__main__":
    main()
