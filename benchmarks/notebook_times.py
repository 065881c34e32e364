"""Time each notebook top to bottom, as a learner runs it, in the profiles asked for, and name its slowest
cells (the course's goal: each notebook in ``default`` within 3 minutes on a 2-core CPU, ``smoke`` well
under 2). Run it on a quiet machine: anything else running changes the figures.

    python benchmarks/notebook_times.py --profiles default smoke [--versions notebooks solutions]
        [--only 03 06] [--out benchmarks/results/notebook_times_cpu.jsonl]

Each run appends one JSON line: notebook, profile, machine, date, wall seconds (kernel start included),
whether every cell ran, the five slowest cells with their seconds (nbclient's recorded timings), and every cell
over 10 s (each must show progress while it runs: issue 31).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import nbclient
import nbformat

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from execute_notebook import cpu_name  # noqa: E402


def cell_seconds(cell: dict) -> float:
    """Seconds between a cell's execute_input and its execute_reply, from nbclient's recorded timing."""
    timing = cell.get("metadata", {}).get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return 0.0
    parse = lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def time_notebook(path: Path, profile: str, timeout: int) -> dict:
    """Execute ``path`` in ``profile`` in a fresh kernel; return its wall time and slowest cells."""
    nb = nbformat.read(path, as_version=4)
    os.environ["MINIDIFF_PROFILE"] = profile
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=False,
                                     resources={"metadata": {"path": str(path.parent)}}, record_timing=True)
    start, ok, error = time.perf_counter(), True, None
    try:
        client.execute()
    except Exception as exc:                       # a cell raised or timed out: report it, keep timing the rest
        ok, error = False, (f"{type(exc).__name__}: "
                            f"{str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else ''}")
    wall = time.perf_counter() - start
    cells = [(i, cell_seconds(c)) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    slowest = sorted(cells, key=lambda c: -c[1])[:5]
    return {"notebook": str(path.relative_to(REPO)), "profile": profile, "machine": cpu_name(),
            "torch_threads": _torch_threads(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "wall_s": round(wall, 1), "ok": ok, "error": error,
            "slowest_cells": [{"cell": i, "s": round(s, 1)} for i, s in slowest],
            "cells_over_10s": [{"cell": i, "s": round(s, 1)} for i, s in cells if s > 10]}   # issue 31: bar and time


def _torch_threads() -> int:
    import torch
    return torch.get_num_threads()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", nargs="+", default=["default", "smoke"], choices=["smoke", "default", "full"])
    parser.add_argument("--versions", nargs="+", default=["notebooks"], choices=["notebooks", "solutions"])
    parser.add_argument("--only", nargs="*", default=None, help="notebook number prefixes, e.g. 03 06")
    parser.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "notebook_times_cpu.jsonl")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for version in args.versions:
        for path in sorted((REPO / version).glob("[0-9][0-9]_*.ipynb")):
            if args.only and not any(path.name.startswith(p) for p in args.only):
                continue
            for profile in args.profiles:
                row = time_notebook(path, profile, args.timeout)
                slow = ", ".join(f"cell {c['cell']} {c['s']} s" for c in row["slowest_cells"][:3])
                print(f"{row['notebook']:40s} {profile:8s} {row['wall_s']:7.1f} s  "
                      f"{'ok' if row['ok'] else 'FAILED ' + str(row['error'])}   slowest: {slow}", flush=True)
                with args.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
