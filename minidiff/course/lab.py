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

    python -m minidiff.course.lab workspace    # the learner's own copies of the notebooks (make lab)
    python -m minidiff.course.lab fresh 03     # a fresh copy of one notebook; the old one is kept aside

Learners work in ``my_notebooks/`` (git-ignored), copied from ``notebooks/`` on first use: JupyterLab's
autosave then changes the learner's files, never the repository's, so ``git pull`` stays clean. A notebook
already in ``my_notebooks/`` is never overwritten; ``fresh`` moves it to ``my_notebooks/old/`` first.

The learner's JupyterLab shows the course only: nbgrader's menu, validate button and sidebars are switched
off for ``make lab`` (``learner_config``) even when nbgrader is installed in the same environment (``make test``
installs it to test grading); ``make instructor`` opens JupyterLab with them.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
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


def ready_line(prefix: Optional[str] = None, opening: bool = False) -> str:
    """One line saying what is ready: minidiff and torch as they import here (versions, device), the
    kernel the notebooks name, and what comes next (``opening``: ``make lab`` is opening JupyterLab now)."""
    import torch

    import minidiff
    device = f"CUDA: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "CPU"
    where = Path(prefix or sys.prefix)
    where = where.name if where.parent == Path.cwd() else str(where)
    return (f"Ready: {where} with minidiff {minidiff.__version__} (torch {torch.__version__}, {device}); "
            f"the notebooks run on the kernel '{KERNELSPEC['display_name']}'. "
            + (f"JupyterLab opens on {WORKSPACE}/ now." if opening else "`make lab` opens the course."))


# The learner's kernel: torch's OpenMP threads sleep instead of spinning while they wait. With spinning (libgomp's
# default) a cell ran 30-70x slower on a busy 2-core machine than on a quiet one; benchmarks/kernel_threads.py.
KERNEL_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def kernel_spec_path(prefix: Optional[str] = None) -> Path:
    """The kernel the notebooks name ("python3", ``nbgen.KERNELSPEC``) as this environment registers it."""
    return Path(prefix or sys.prefix) / "share" / "jupyter" / "kernels" / KERNELSPEC["name"] / "kernel.json"


def set_kernel_env(prefix: Optional[str] = None) -> Optional[Path]:
    """Add ``KERNEL_ENV`` to the environment's "python3" kernel spec (ipykernel's, kept otherwise as it is);
    returns its path, or None where the environment has no such kernel spec (ipykernel not installed)."""
    path = kernel_spec_path(prefix)
    if not path.exists():
        return None
    spec = json.loads(path.read_text(encoding="utf-8"))
    env = {**spec.get("env", {}), **KERNEL_ENV}
    if spec.get("env") != env:
        spec["env"] = env
        atomic_write_text(path, json.dumps(spec, indent=1) + "\n")
    return path


WORKSPACE = "my_notebooks"
# nbgrader's parts of JupyterLab: its front-end extension and its four server extensions
NBGRADER_LAB_EXTENSION = "@jupyter/nbgrader"
NBGRADER_SERVER_EXTENSIONS = ("formgrader", "validate_assignment", "assignment_list", "course_list")


def workspace(root: Path, source: str = "notebooks", target: str = WORKSPACE) -> list[Path]:
    """Copy every ``source/NN_*.ipynb`` that ``target/`` does not hold yet; return the copies made.
    Nothing already in ``target/`` is changed: it is the learner's work."""
    src, dst = Path(root) / source, Path(root) / target
    notebooks = sorted(src.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no notebooks (NN_*.ipynb) in {src}")
    dst.mkdir(exist_ok=True)
    made = []
    for notebook in notebooks:
        copy = dst / notebook.name
        if not copy.exists():
            shutil.copyfile(notebook, copy)
            made.append(copy)
    return made


def fresh(root: Path, which: str, source: str = "notebooks", target: str = WORKSPACE) -> tuple[Path, Optional[Path]]:
    """Replace the learner's copy of notebook ``which`` (its number, e.g. "03", or its file name) by the
    repository's; the old copy moves to ``target/old/`` with the time in its name. Returns (new, old)."""
    src = Path(root) / source
    name = which if which.endswith(".ipynb") else f"{which}_*.ipynb"
    matches = sorted(src.glob(name)) if which and "/" not in which else []
    if len(matches) != 1:
        choices = ", ".join(p.name[:2] for p in sorted(src.glob("[0-9][0-9]_*.ipynb")))
        raise ValueError(f"which must name one notebook by its number ({choices}) or file name; got {which!r}")
    notebook = matches[0]
    copy = Path(root) / target / notebook.name
    old = None
    if copy.exists():
        old = copy.parent / "old" / f"{copy.stem}-{time.strftime('%Y%m%d-%H%M%S')}.ipynb"
        old.parent.mkdir(parents=True, exist_ok=True)
        copy.replace(old)
    copy.parent.mkdir(exist_ok=True)
    shutil.copyfile(notebook, copy)
    return copy, old


def learner_config(prefix: Optional[str] = None) -> Path:
    """Write the Jupyter configuration folder that hides nbgrader, ``<prefix>/etc/minidiff-learner``, and
    return it. ``make lab`` puts it first on ``JUPYTER_CONFIG_PATH``, so for that run JupyterLab's page
    config disables nbgrader's front end (``labconfig/page_config.json``) and the server does not load its
    server extensions (``jupyter_server_config.json``); other Jupyter runs of the environment are unchanged."""
    folder = Path(prefix or sys.prefix) / "etc" / "minidiff-learner"
    (folder / "labconfig").mkdir(parents=True, exist_ok=True)
    page = {"disabledExtensions": {NBGRADER_LAB_EXTENSION: True}}
    server = {"ServerApp": {"jpserver_extensions": {f"nbgrader.server_extensions.{name}": False
                                                    for name in NBGRADER_SERVER_EXTENSIONS}}}
    atomic_write_text(folder / "labconfig" / "page_config.json", json.dumps(page, indent=2) + "\n")
    atomic_write_text(folder / "jupyter_server_config.json", json.dumps(server, indent=2) + "\n")
    return folder


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minidiff.course.lab", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    setup = sub.add_parser("setup",
                           help="turn off JupyterLab's news pop-up in this environment, then print what is ready")
    setup.add_argument("--app-dir", help="JupyterLab's application directory (default: the one JupyterLab uses)")
    setup.add_argument("--opening", action="store_true", help="say that JupyterLab opens now (make lab)")
    sub.add_parser("workspace", help=f"copy the notebooks that {WORKSPACE}/ does not hold yet, and say so")
    renew = sub.add_parser("fresh", help=f"a fresh copy of one notebook in {WORKSPACE}/ (the old one is kept)")
    renew.add_argument("which", help="the notebook's number (e.g. 03) or file name")
    args = parser.parse_args(argv)
    root = Path.cwd()
    if args.command == "setup":
        write_overrides(args.app_dir)
        learner_config()
        set_kernel_env()
        print(ready_line(opening=args.opening))
    elif args.command == "workspace":
        learner_config()
        set_kernel_env()
        made = workspace(root)
        if made:
            print(f"Your notebooks are in {WORKSPACE}/ (copied from notebooks/: {len(made)} new). Autosave changes "
                  f"those, not the repository's. A fresh copy of one: make fresh NB=03")
    elif args.command == "fresh":
        try:
            new, old = fresh(root, args.which)
        except ValueError as error:
            parser.error(str(error))
        kept = f"; your old copy is {old.relative_to(root)}" if old else ""
        print(f"{new.relative_to(root)} is fresh from notebooks/{kept}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
