"""Execute a notebook top to bottom and save it with its outputs (text and figures), so that what a
GPU run printed and drew can be read and looked at afterwards. A cell that raises fails the run, as
under nbval --nbval-lax.

    python scripts/execute_notebook.py NOTEBOOK OUTPUT [--timeout SECONDS]
"""
from __future__ import annotations

import argparse
import sys

import nbclient
import nbformat


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook")
    parser.add_argument("output")
    parser.add_argument("--timeout", type=int, default=600, help="seconds one cell may run")
    args = parser.parse_args()
    nb = nbformat.read(args.notebook, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=args.timeout, kernel_name="python3",
                                     resources={"metadata": {"path": "."}})
    try:
        client.execute()
        return 0
    except nbclient.exceptions.CellExecutionError as error:
        print(error, file=sys.stderr)
        return 1
    finally:
        nbformat.write(nb, args.output)       # outputs up to the failing cell, for reading


if __name__ == "__main__":
    sys.exit(main())
