"""Why a notebook cell can run many times slower on a busy machine than its CPU share explains: torch's
OpenMP threads spin while they wait for each other, and on a machine whose other cores are busy a spinning
thread holds a core that the thread it waits for needs.

Times one training step of a small U-Net (the size notebooks 04-07 train on a CPU) in fresh processes, with
1 and 2 torch threads and OpenMP's wait policy ACTIVE (spin, libgomp's default with few threads) or PASSIVE
(sleep), on a quiet machine and beside other work: ``--loads`` plain busy processes (each keeps one core busy, as a
browser or a compile does) and ``--torch-loads`` competing torch trainings with 2 spinning threads each (as another
notebook's kernel or `make book` does).

    python benchmarks/kernel_threads.py [--seconds 8] [--loads 0 1 2] [--torch-loads 1]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

STEP = r"""
import sys, time, torch, minidiff as md
torch.set_num_threads(int(sys.argv[1]))
torch.manual_seed(0)
model = md.UNet(md.UNetConfig(base_channels=32, channel_mults=(1, 2), blocks_per_level=1, attention_resolutions=()))
x, t = torch.randn(32, 1, 28, 28), torch.randint(0, 1000, (32,))
optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
def step():
    loss = (model(x, t) - x).pow(2).mean()
    optimizer.zero_grad(); loss.backward(); optimizer.step()
step()
start, n = time.perf_counter(), 0
while time.perf_counter() - start < float(sys.argv[2]):
    step(); n += 1
print((time.perf_counter() - start) / n)
"""


def time_step(threads: int, policy: str, seconds: float) -> float:
    """Seconds per training step in a fresh process (OMP_WAIT_POLICY is read when torch loads)."""
    env = dict(os.environ, OMP_WAIT_POLICY=policy)
    env.pop("OMP_NUM_THREADS", None)
    done = subprocess.run([sys.executable, "-c", STEP, str(threads), str(seconds)], env=env,
                          capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def busy_processes(n: int, torch_training: bool = False) -> list[subprocess.Popen]:
    """``n`` processes that keep the CPU busy until killed: a Python spin loop (one core each), or the same training
    step as the one timed, with 2 torch threads and libgomp's default (spinning) wait policy."""
    env = dict(os.environ, OMP_WAIT_POLICY="ACTIVE")
    env.pop("OMP_NUM_THREADS", None)
    command = [sys.executable, "-c", STEP, "2", "1e9"] if torch_training else [sys.executable, "-c", "while True: pass"]
    return [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="how long each setting trains")
    parser.add_argument("--loads", type=int, nargs="*", default=[0, 1, 2], help="numbers of busy spin processes")
    parser.add_argument("--torch-loads", type=int, nargs="*", default=[1], help="numbers of competing torch trainings")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; load average before: {os.getloadavg()[0]:.2f}")
    for load, torch_training in [(n, False) for n in args.loads] + [(n, True) for n in args.torch_loads]:
        burners = busy_processes(load, torch_training)
        what = "torch training(s), 2 spinning threads" if torch_training else "busy process(es)"
        try:
            time.sleep(3.0 if torch_training else 0.5)     # a torch competitor first imports torch and builds its model
            for threads in (1, 2):
                for policy in ("ACTIVE", "PASSIVE"):
                    ms = 1000 * time_step(threads, policy, args.seconds)
                    print(f"{load} {what}, {threads} thread(s), OMP_WAIT_POLICY={policy}: {ms:7.0f} ms/step",
                          flush=True)
        finally:
            for p in burners:
                p.kill()
                p.wait()


if __name__ == "__main__":
    main()
