r"""The learner's JupyterLab: the last step of setting up ``.venv`` (``make lab``, ``make setup``).

    python -m minidiff.course.lab setup        # write the settings below, then say in one line what is ready

JupyterLab reads ``overrides.json`` in its application directory's ``settings/`` (in a venv,
``<venv>/share/jupyter/lab/settings/``) as its defaults in that environment; a learner's own settings
still win. The course turns off the news pop-up (on first start it
asks whether to fetch Jupyter news, and covers the lower right of every page until it is answered) and
the update check that would fetch from the web. Nothing else is changed, and keys already in the file
are kept.

The notebooks run on the standard kernel "Python 3 (ipykernel)" (``nbgen.KERNELSPEC``, written into
every notebook): in ``make lab`` that is ``.venv``'s own Python, elsewhere the Python of whichever
environment has minidiff installed (a conda environment, Colab), so no second kernel is registered.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from ..checkpoint import atomic_write_text
from .nbgen import KERNELSPEC

# plugin id -> setting -> value; the keys are those of JupyterLab 4's schema
# (share/jupyter/lab/schemas/@jupyterlab/apputils-extension/notification.json)
LAB_OVERRIDES = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
}


def lab_app_dir() -> Path:
    """JupyterLab's application directory, as JupyterLab itself finds it (``$JUPYTERLAB_DIR`` if set;
    ``<sys.prefix>/share/jupyter/lab`` in a venv, and that path when JupyterLab is not installed)."""
    try:
        from jupyterlab.commands import get_app_dir
    except ImportError:
        return Path(sys.prefix) / "share" / "jupyter" / "lab"
    return Path(get_app_dir())


def overrides_path(app_dir: Optional[str] = None) -> Path:
    """Where JupyterLab looks for an environment's default settings: ``<app_dir>/settings/overrides.json``."""
    return Path(app_dir or lab_app_dir()) / "settings" / "overrides.json"


def write_overrides(app_dir: Optional[str] = None) -> Path:
    """Merge ``LAB_OVERRIDES`` into the environment's ``overrides.json`` (created if missing) and return its path.
    A file that is not a JSON object is a ValueError naming it, rather than being overwritten."""
    path = overrides_path(app_dir)
    settings = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    if not isinstance(settings, dict):
        raise ValueError(f"{path} must hold a JSON object (plugin id -> settings); got {type(settings).__name__}")
    for plugin, values in LAB_OVERRIDES.items():
        settings[plugin] = {**settings.get(plugin, {}), **values}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(settings, indent=2) + "\n")
    return path


def ready_line(prefix: Optional[str] = None) -> str:
    """One line saying what is ready: minidiff and torch as they import here (versions, device), and the
    kernel the notebooks name."""
    import torch

    import minidiff
    device = f"CUDA: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "CPU"
    where = Path(prefix or sys.prefix)
    where = where.name if where.parent == Path.cwd() else str(where)
    return (f"Ready: {where} with minidiff {minidiff.__version__} (torch {torch.__version__}, {device}); "
            f"the notebooks run on the kernel '{KERNELSPEC['display_name']}'. `make lab` opens the course.")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minidiff.course.lab", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    setup = sub.add_parser("setup", help="turn off JupyterLab's news pop-up in this environment, then print what is ready")
    setup.add_argument("--app-dir", help="JupyterLab's application directory (default: the one JupyterLab uses)")
    args = parser.parse_args(argv)
    write_overrides(args.app_dir)
    print(ready_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
