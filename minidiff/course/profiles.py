"""The run profile: how much compute a notebook or test may spend.

`MINIDIFF_PROFILE` is read here and nowhere else (`mc.profile()` after `import minidiff.course as mc`); the
library itself never reads it: a notebook picks its settings with `mc.by_profile` where a reader sees them.

- ``smoke``   CI on a 2-core CPU: the smallest settings that still run every code path.
- ``default`` a learner: short CPU training, real training on a GPU.
- ``full``    the GPU runner: trains to reference quality and asserts it.
"""
from __future__ import annotations

import os
from typing import Literal, TypeVar

Profile = Literal["smoke", "default", "full"]
PROFILES: tuple[Profile, ...] = ("smoke", "default", "full")
T = TypeVar("T")


def profile() -> Profile:
    """The active profile, from the environment variable ``MINIDIFF_PROFILE`` (default ``default``)."""
    name = os.environ.get("MINIDIFF_PROFILE", "default").strip().lower() or "default"
    if name not in PROFILES:
        raise ValueError(f"MINIDIFF_PROFILE must be one of {PROFILES}; got {name!r}")
    return name  # type: ignore[return-value]


def by_profile(smoke: T, default: T, full: T) -> T:
    """Pick the value for the active profile, e.g. ``steps = by_profile(smoke=20, default=500, full=5000)``."""
    return {"smoke": smoke, "default": default, "full": full}[profile()]
