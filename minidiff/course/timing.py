"""A notebook cell that runs long says how long it took: ``cell took 12.3 s`` under its output.

``import minidiff.course`` installs the timer in the IPython kernel that imports it (once, however often the
import runs); ``time_cells(None)`` removes it and ``time_cells(30)`` changes the threshold. Outside IPython
(a script, a test, the command-line tools) nothing is installed and nothing prints.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, Optional

THRESHOLD = 10.0    # seconds: quicker cells print nothing


class CellTimer:
    """IPython's ``pre_run_cell`` / ``post_run_cell`` events: the clock starts before a cell runs, and after it
    the elapsed time prints if it reached ``threshold`` seconds."""

    def __init__(self, threshold: float = THRESHOLD, clock: Callable[[], float] = time.perf_counter) -> None:
        self.threshold, self.clock, self.start = threshold, clock, None

    def pre_run_cell(self, info: Any = None) -> None:
        self.start = self.clock()

    def post_run_cell(self, result: Any = None) -> None:
        if self.start is None:          # the cell that installed the timer: it started before the clock
            return
        seconds, self.start = self.clock() - self.start, None
        if seconds >= self.threshold:
            print(f"cell took {seconds:.1f} s")


def _shell() -> Any:
    """The running IPython shell, or None (IPython is never imported here: only a kernel has it loaded)."""
    ipython = sys.modules.get("IPython")
    return ipython.get_ipython() if ipython is not None else None


def time_cells(threshold: Optional[float] = THRESHOLD, shell: Any = None) -> Optional[CellTimer]:
    """Install the cell timer in ``shell`` (default: the running IPython kernel), replacing any installed
    before, so cells of ``threshold`` seconds or more print their time; ``threshold=None`` removes it.
    Returns the timer, or None where there is no shell or it was removed."""
    shell = shell if shell is not None else _shell()
    if shell is None:
        return None
    old = getattr(shell, "_minidiff_cell_timer", None)
    if old is not None:
        shell.events.unregister("pre_run_cell", old.pre_run_cell)
        shell.events.unregister("post_run_cell", old.post_run_cell)
        shell._minidiff_cell_timer = None
    if threshold is None:
        return None
    timer = CellTimer(threshold)
    shell.events.register("pre_run_cell", timer.pre_run_cell)
    shell.events.register("post_run_cell", timer.post_run_cell)
    shell._minidiff_cell_timer = timer
    return timer


def install() -> None:
    """What ``import minidiff.course`` does: the timer in the running kernel, unless one is installed already."""
    shell = _shell()
    if shell is not None and getattr(shell, "_minidiff_cell_timer", None) is None:
        time_cells(THRESHOLD, shell)
