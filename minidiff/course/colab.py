r"""Where the course lives online, and the cell that sets a notebook up on Colab.

The repository's address is set in ONE place: ``[project.urls] Repository`` in pyproject.toml. nbgen
writes it into every notebook's Colab cell and the site (``minidiff.course.book``) into each page's
"Open in Colab" link. A fork sets its own address there and runs ``make notebooks``.

Colab opens a notebook straight from GitHub:
``https://colab.research.google.com/github/OWNER/REPO/blob/BRANCH/PATH``; the first cell of every
notebook (``setup_cell_source``) then installs minidiff from the same repository, and only on Colab.
"""
from __future__ import annotations

import re
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
BRANCH = "main"                       # the branch Colab links and the install cell point at
SETUP_CELL_ID = "colab-setup"         # the first cell of every notebook (nbgen writes it)
COLAB = "https://colab.research.google.com/github"
PLACEHOLDER = "YOUR-ACCOUNT"          # in pyproject's value until the course has a real home
GITHUB = re.compile(r"^https://github\.com/([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+?)(?:\.git)?/?$")


def repository_url(pyproject: Path = PYPROJECT) -> str:
    """``[project.urls] Repository`` from ``pyproject`` (read without a TOML library: Python 3.10 has none)."""
    if not pyproject.exists():
        raise FileNotFoundError(f"pyproject.toml not found at {pyproject}: the repository URL is set there "
                                f"([project.urls] Repository); run this from a clone of the course")
    section = re.search(r"^\[project\.urls\][ \t]*$(.*?)(?=^\[|\Z)", pyproject.read_text(encoding="utf-8"),
                        re.MULTILINE | re.DOTALL)
    found = section and re.search(r'^Repository\s*=\s*"([^"]+)"', section.group(1), re.MULTILINE)
    if not found:
        raise ValueError(f'{pyproject}: expected a line `Repository = "https://github.com/OWNER/REPO"` under '
                         f"[project.urls]; got none")
    return found.group(1).rstrip("/")


def github_repo(url: str) -> tuple[str, str]:
    """``https://github.com/OWNER/REPO`` -> ``(OWNER, REPO)``; anything else is a ValueError (Colab opens
    notebooks from GitHub only)."""
    match = GITHUB.match(url)
    if not match:
        raise ValueError(f"the repository URL must look like https://github.com/OWNER/REPO for Colab links; "
                         f"got {url!r} (set it in pyproject.toml, [project.urls] Repository)")
    return match.group(1), match.group(2)


def colab_url(path: str, url: str | None = None) -> str:
    """The address that opens the repository's file ``path`` (e.g. ``notebooks/01_….ipynb``) on Colab."""
    owner, repo = github_repo(url or repository_url())
    return f"{COLAB}/{owner}/{repo}/blob/{BRANCH}/{path.lstrip('/')}"


def blob_url(path: str, url: str | None = None) -> str:
    """The address of the repository's file ``path`` as the forge shows it."""
    return f"{url or repository_url()}/blob/{BRANCH}/{path.lstrip('/')}"


def setup_cell_source(url: str | None = None) -> str:
    """The first cell of every notebook: on Colab, pip-install minidiff from the repository; elsewhere nothing."""
    return (
        "# On Colab only: install minidiff from the course's repository. Anywhere else this cell does nothing.\n"
        "import subprocess, sys\n"
        "if \"google.colab\" in sys.modules:\n"
        f"    subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"-q\", "
        f"\"minidiff @ git+{url or repository_url()}@{BRANCH}\"], check=True)")
