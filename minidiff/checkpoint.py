r"""Checkpoints: save atomically, load safely.

A checkpoint is a plain dict of tensors, dicts, lists, tuples, numbers, strings, bools and None, so
that ``torch.load(..., weights_only=True)`` can read it: that loader rebuilds only data, never runs
code stored in the file, which makes a shared or downloaded checkpoint safe to open.

Saving writes a temporary file next to the target, flushes it to disk, then renames it over the
target in one step (``os.replace`` is atomic on POSIX and Windows). A crash halfway through a save
therefore leaves the previous checkpoint untouched instead of a truncated file.

Every file carries its own checksum: ``save_checkpoint`` stores the SHA-256 of the contents
(``state_digest``) under the key ``"sha256"``, and ``load_checkpoint`` recomputes it and refuses a file
whose contents changed after it was written (one flipped bit in a weight is enough).
"""
from __future__ import annotations

import errno
import hashlib
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


class DiskFullError(OSError):
    """No space was left on the device while writing; the file that was there before is intact."""


CHECKSUM_KEY = "sha256"
TRAIN_FORMAT = "minidiff.train/2"          # a resumable training checkpoint (minidiff.train.Trainer.save)


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
    except BaseException as err:
        Path(tmp.name).unlink(missing_ok=True)
        if _is_disk_full(err):
            raise DiskFullError(errno.ENOSPC, f"no space left on device while writing {path}; the file that "
                                f"was there before (if any) is intact: free some space and save again") from err
        raise


def _is_disk_full(err: BaseException) -> bool:
    # torch.save reports a full disk as "RuntimeError: [enforce fail at inline_container.cc] . unexpected pos"
    return (isinstance(err, OSError) and err.errno == errno.ENOSPC) or \
        (isinstance(err, RuntimeError) and "unexpected pos" in str(err))


def state_digest(state: Any) -> str:
    """The SHA-256 of a checkpoint's contents: every key, number and string, and every tensor's dtype,
    shape and bytes, in a fixed order (the checksum key itself left out)."""
    digest = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().contiguous()
            digest.update(f"T{value.dtype}{tuple(value.shape)}".encode())
            digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            digest.update(b"{")
            for key in sorted(value, key=repr):
                if key != CHECKSUM_KEY:
                    feed(key)
                    feed(value[key])
            digest.update(b"}")
        elif isinstance(value, (list, tuple)):
            digest.update(b"[" if isinstance(value, list) else b"(")
            for item in value:
                feed(item)
            digest.update(b"]")
        else:
            digest.update(f"{type(value).__name__}:{value!r};".encode())

    feed(state)
    return digest.hexdigest()


def save_checkpoint(path: PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (``atomic_write``), readable with ``load_checkpoint``."""
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict; got {type(state).__name__}")
    state = {**state, CHECKSUM_KEY: state_digest(state)}
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` with ``weights_only=True`` (data only, no code).

    Raises FileNotFoundError when ``path`` is missing, CorruptCheckpointError when it cannot be read
    or its contents do not match the checksum stored in it, and UnsafeCheckpointError when it holds
    objects that weights-only loading refuses. The checksum key is removed from the returned dict."""
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
    stored = state.pop(CHECKSUM_KEY, None)
    if stored is not None and stored != state_digest(state):
        raise CorruptCheckpointError(f"{path} is corrupt: its contents do not match the SHA-256 stored in it when "
                                     f"it was written (the file was damaged or changed since); it was not used")
    return state


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "(no message)"
