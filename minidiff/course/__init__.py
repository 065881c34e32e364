"""The course's tooling, apart from the library: ``import minidiff.course as mc`` in a notebook.

    mc.profile(), mc.by_profile(smoke=…, default=…, full=…)   the run profile (MINIDIFF_PROFILE)
    mc.exercises.check_q_step(q_step)                         exercise checks, hints, use_reference
    mc.viz.show_grid(images)                                  plots and widgets (matplotlib, ipywidgets)
    mc.time_cells(threshold=10)                               cells that run long print "cell took 12.3 s"

In a Jupyter kernel the import installs the cell timer (``timing``): a cell of 10 s or more prints its time.

``exercises`` and ``viz`` load on first use, so the command-line tools beside them (``nbgen``,
``grading``, ``lab``, ``colab``, ``book``: run as ``python -m minidiff.course.NAME``) start without
matplotlib. The library (``import minidiff``) never imports this package.
"""
from __future__ import annotations

import importlib
from typing import Any

from . import timing
from .profiles import PROFILES, by_profile, profile
from .timing import time_cells

__all__ = ["profile", "by_profile", "PROFILES", "time_cells", "exercises", "viz"]

timing.install()

_LAZY = ("exercises", "viz")


def __getattr__(name: str) -> Any:
    """``mc.exercises`` and ``mc.viz``, imported the first time they are used."""
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
