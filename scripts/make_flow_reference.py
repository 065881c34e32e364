"""Reference numbers from two peer libraries, for minidiff's flow-matching tests (notebook 09).

    pip install flow_matching diffusers          # test-data only: minidiff never imports them
    python scripts/make_flow_reference.py        # writes tests/data/flow_reference.json

minidiff's convention (diffusers', SD3's): x_t = (1 − t)·x₀ + t·ε, t = 0 the data, t = 1 noise, and the
network predicts u = ε − x₀ = dx_t/dt. What this script stores, each from a peer's own code:

* ``path``: facebookresearch's ``flow_matching`` ``CondOTProbPath`` puts noise at ITS time 0 and data at 1:
  X_s = s·X₁ + (1 − s)·X₀ with X₀ the noise and X₁ the data. With s = 1 − t that is our x_t, and its
  velocity dX_s/ds = X₁ − X₀ = x₀ − ε = −u. The file keeps the peer's x_t and dx_t at s = 1 − t as they
  come; the test maps them.
* ``shift``: diffusers' ``FlowMatchEulerDiscreteScheduler(shift=…)`` given the unshifted times
  linspace(1, 0, steps + 1) without the final 0 (``set_timesteps(sigmas=…)``): its shifted times, to which
  it appends 0.
* ``euler``: the same scheduler's ``step`` from each of those times to the next, on a fixed sample and a
  fixed model output.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "flow_reference.json"


def path_reference(generator: torch.Generator) -> dict:
    from flow_matching.path import CondOTProbPath
    x0, eps = torch.randn(4, 3, generator=generator), torch.randn(4, 3, generator=generator)
    t = torch.tensor([0.0, 0.25, 0.6, 1.0])
    sample = CondOTProbPath().sample(x_0=eps, x_1=x0, t=1 - t)        # the peer's time s = 1 − t
    return {"x0": x0.tolist(), "eps": eps.tolist(), "t": t.tolist(),
            "peer_x_t": sample.x_t.tolist(), "peer_dx_t": sample.dx_t.tolist()}


def shift_and_euler_reference(generator: torch.Generator) -> list[dict]:
    from diffusers import FlowMatchEulerDiscreteScheduler
    cases = []
    for steps, shift in [(4, 1.0), (8, 3.0), (5, 0.5)]:
        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
        scheduler.set_timesteps(sigmas=torch.linspace(1, 0, steps + 1)[:-1].tolist())
        x = torch.randn(2, 3, generator=generator)
        outputs = torch.randn(steps, 2, 3, generator=generator)
        xs = [x.tolist()]
        for i, timestep in enumerate(scheduler.timesteps):
            x = scheduler.step(outputs[i], timestep, x).prev_sample
            xs.append(x.tolist())
        cases.append({"steps": steps, "shift": shift, "peer_times": scheduler.sigmas.tolist(),
                      "outputs": outputs.tolist(), "peer_xs": xs})
    return cases


def main() -> None:
    import diffusers
    import flow_matching
    generator = torch.Generator().manual_seed(0)
    reference = {"made_by": "scripts/make_flow_reference.py",
                 "peers": {"flow_matching": flow_matching.__version__, "diffusers": diffusers.__version__},
                 "path": path_reference(generator), "shift_euler": shift_and_euler_reference(generator)}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(reference, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT} (flow_matching {flow_matching.__version__}, diffusers {diffusers.__version__})")


if __name__ == "__main__":
    main()
