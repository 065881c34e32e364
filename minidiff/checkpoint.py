r"""Checkpoints: save atomically, load safely.

A checkpoint is a plain dict of tensors, dicts, lists, tuples, numbers, strings, bools and None, so
that ``torch.load(..., weights_only=True)`` can read it: that loader rebuilds only data, never runs
code stored in the file, which makes a shared or downloaded checkpoint safe to open.

Saving writes a temporary file next to the target, flushes it to disk, then renames it over the
target in one step (``os.replace`` is atomic on POSIX and Windows). A crash halfway through a save
therefore leaves the previous checkpoint untouched instead of a truncated file.
"""
from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Union

import torch

PathLike = Union[str, os.PathLike]


class CorruptCheckpointError(ValueError):
    """The file exists but is not a readable checkpoint (truncated, damaged, or not a checkpoint)."""


class UnsafeCheckpointError(ValueError):
    """The file holds Python objects other than plain data, which ``weights_only`` loading refuses."""


def atomic_write(path: PathLike, write: Callable[[IO], Any], mode: str = "wb") -> None:
    """Call ``write(file)`` on a temporary file in ``path``'s folder, fsync it, then rename it onto
    ``path``: a crash at any moment leaves either the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as the target: a rename across file systems would not be atomic.
    tmp = tempfile.NamedTemporaryFile(mode, dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with tmp:
            write(tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp.name, path)
    except BaseException:
        Path(tmp.name).unlink(missing_ok=True)
        raise


def save_checkpoint(path: PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (``atomic_write``), readable with ``load_checkpoint``."""
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict; got {type(state).__name__}")
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` with ``weights_only=True`` (data only, no code).

    Raises FileNotFoundError when ``path`` is missing, CorruptCheckpointError when it cannot be read,
    and UnsafeCheckpointError when it holds objects that weights-only loading refuses."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only refuses to rebuild a global (a class or function): an unsafe file. Any other
        # unpickling failure (an unknown opcode, say) means damaged bytes.
        if "global" in str(err).lower() or "unsupported class" in str(err).lower():
            raise UnsafeCheckpointError(f"{path} holds Python objects that weights_only loading refuses (only "
                                        f"tensors and plain data are allowed); it was not written by "
                                        f"save_checkpoint, or it was tampered with") from err
        raise CorruptCheckpointError(f"{path} is corrupt (cannot be unpickled): {_first_line(err)}") from err
    except Exception as err:            # a damaged zip or pickle surfaces as many different errors
        raise CorruptCheckpointError(f"{path} is corrupt or truncated (not a readable torch checkpoint): "
                                     f"{type(err).__name__}: {_first_line(err)}") from err
    if not isinstance(state, dict):
        raise CorruptCheckpointError(f"{path} is not a minidiff checkpoint: it holds a "
                                     f"{type(state).__name__}, not a dict")
    return state


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "(no message)"
