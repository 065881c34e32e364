"""Execute a notebook top to bottom and save it with its outputs (text and figures), so that what a
GPU run printed and drew can be read and looked at afterwards. A cell that raises fails the run, as
under nbval --nbval-lax.

    python scripts/execute_notebook.py NOTEBOOK OUTPUT [--timeout SECONDS]

The copy records where it was made, in its metadata under ``minidiff.executed``: the profile
(MINIDIFF_PROFILE), the machine (GPU name, or CPU model and cores), the date (UTC), the seconds it
took, the versions of Python, torch and minidiff, the git commit, whether every cell ran and, if one
raised, which (``error``). The
site (``make book``, minidiff.course.book) prints these on each page.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import nbclient
import nbformat

REPO = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;]*m")      # colour codes in IPython's tracebacks


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


def failure(nb: nbformat.NotebookNode) -> str | None:
    """Which cell of an executed notebook raised, and the error (its traceback, colour codes removed); None when
    no cell did. Cells count from 1, as JupyterLab's "cell N of M" does."""
    for number, cell in enumerate(nb.cells, start=1):
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.output_type == "error":
                trace = ANSI.sub("", "\n".join(output.get("traceback", [])))
                return (f"cell {number} of {len(nb.cells)} (id {cell.get('id')}) raised "
                        f"{output.ename}: {output.evalue}\n--- the cell ---\n{cell.source}\n--- traceback ---\n{trace}")
    return None


def execute(notebook: Path, output: Path, timeout: int = 600, env: dict | None = None) -> dict:
    """Run ``notebook`` top to bottom in a fresh kernel (working directory: the notebook's folder, as nbval
    and JupyterLab use) and write it with its outputs to ``output``, atomically. ``env``: the kernel's
    environment (default: this process's). Returns the record stored in the copy's metadata (under
    ``minidiff.executed``); when a cell raised, its ``ok`` is False and its ``error`` names the cell and the error."""
    notebook, output = Path(notebook), Path(output)
    nb = nbformat.read(notebook, as_version=4)
    record = provenance() | {"source": str(notebook)}
    if env is not None and env.get("MINIDIFF_PROFILE"):
        record["profile"] = env["MINIDIFF_PROFILE"]          # the kernel's, where it differs from this process's
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(notebook.parent.resolve())}})
    start, error = time.monotonic(), None
    try:
        client.execute(**({"env": env} if env is not None else {}))
    except nbclient.exceptions.CellExecutionError as exc:
        error = failure(nb) or str(exc)
    except Exception as exc:          # a dead kernel or a timeout: no error output in any cell
        error = f"{type(exc).__name__}: {exc}"
    record |= {"seconds": round(time.monotonic() - start, 1), "ok": error is None}
    if error is not None:
        record["error"] = error
    nb.metadata.setdefault("minidiff", {})["executed"] = record
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    nbformat.write(nb, partial)         # outputs up to the failing cell, for reading
    os.replace(partial, output)
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook")
    parser.add_argument("output")
    parser.add_argument("--timeout", type=int, default=600, help="seconds one cell may run")
    args = parser.parse_args()
    record = execute(Path(args.notebook), Path(args.output), args.timeout)
    if not record["ok"]:
        print(f"{args.notebook}: {record['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
