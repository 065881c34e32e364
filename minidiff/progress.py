"""Progress bars for the library's long loops (training, sampling, evaluation).

Every loop that can run for minutes takes ``progress: Optional[bool] = None``: ``True`` always draws a bar,
``False`` never does, and ``None`` draws one where a person is watching (a notebook, a terminal) and none in a
log file or a test. A bar appears only once its loop has run ``DELAY`` seconds, so quick calls stay silent.
"""
from __future__ import annotations

import sys
from typing import Any, Iterable, Optional

from tqdm.auto import tqdm

DELAY = 2.0    # seconds a loop runs before its bar appears


def show_progress(progress: Optional[bool]) -> bool:
    """None means: a bar on a terminal or in a notebook, none in a log file or under a test runner."""
    return progress if progress is not None else sys.stderr.isatty() or "ipykernel" in sys.modules


def progress_bar(iterable: Optional[Iterable] = None, progress: Optional[bool] = None, desc: Optional[str] = None,
                 total: Optional[int] = None, **kwargs: Any) -> tqdm:
    """``tqdm`` over ``iterable`` (or a manual bar of ``total``), drawn as ``show_progress(progress)`` says."""
    return tqdm(iterable, desc=desc, total=total, disable=not show_progress(progress), delay=DELAY, **kwargs)
