"""Execute a notebook top to bottom and save it with its outputs (text and figures), so that what a
GPU run printed and drew can be read and looked at afterwards. A cell that raises fails the run, as
under nbval --nbval-lax.

    python scripts/execute_notebook.py NOTEBOOK OUTPUT [--timeout SECONDS]

The copy records where it was made, in its metadata under ``minidiff.executed``: the profile
(MINIDIFF_PROFILE), the machine (GPU name, or CPU model and cores), the date (UTC), the seconds it
took, the versions of Python, torch and minidiff, the git commit, and whether every cell ran. The
site (``make book``, minidiff.course.book) prints these on each page.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import nbclient
import nbformat

REPO = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux) and its core count."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def git_commit() -> str | None:
    """This checkout's commit, with ``-dirty`` when tracked files differ from it; None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def provenance() -> dict:
    """Where and how this run happens: profile, machine, date, versions (the kernel runs on this machine,
    with this environment)."""
    import torch
    import minidiff
    from minidiff.course import profile
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"profile": profile(), "device": "cuda" if gpu else "cpu", "gpu": gpu, "cpu": cpu_name(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(), "torch": torch.__version__, "minidiff": minidiff.__version__,
            "commit": git_commit()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook")
    parser.add_argument("output")
    parser.add_argument("--timeout", type=int, default=600, help="seconds one cell may run")
    args = parser.parse_args()
    nb = nbformat.read(args.notebook, as_version=4)
    executed = provenance() | {"source": args.notebook}
    client = nbclient.NotebookClient(nb, timeout=args.timeout, kernel_name="python3",
                                     resources={"metadata": {"path": "."}})
    start, ok = time.monotonic(), False
    try:
        client.execute()
        ok = True
        return 0
    except nbclient.exceptions.CellExecutionError as error:
        print(error, file=sys.stderr)
        return 1
    finally:
        executed |= {"seconds": round(time.monotonic() - start, 1), "ok": ok}
        nb.metadata.setdefault("minidiff", {})["executed"] = executed
        nbformat.write(nb, args.output)       # outputs up to the failing cell, for reading


if __name__ == "__main__":
    sys.exit(main())
