r"""Checkpoints: save atomically, load safely.

A checkpoint is a plain dict of tensors, dicts, lists, tuples, numbers, strings, bools and None, so
that ``torch.load(..., weights_only=True)`` can read it: that loader rebuilds only data, never runs
code stored in the file, which makes a shared or downloaded checkpoint safe to open.

Saving writes a temporary file next to the target, flushes it to disk, then renames it over the
target in one step (``os.replace`` is atomic on POSIX and Windows). A crash halfway through a save
therefore leaves the previous checkpoint untouched instead of a truncated file.

Every file carries its own checksum: ``save_checkpoint`` stores the SHA-256 of the contents
(``state_digest``) under the key ``"sha256"``, and ``load_checkpoint`` recomputes it and refuses a file
whose contents changed after it was written (one flipped bit in a weight is enough), and a file that
carries no checksum at all (``UnverifiedCheckpointError``: nothing could tell whether it was changed).

``save_checkpoint`` refuses, before writing anything, a state that ``load_checkpoint`` could not read
back (an object that is not plain data, such as a dataclass), so a good file is never replaced by one
that cannot be loaded.
"""
from __future__ import annotations

import collections
import dataclasses
import errno
import hashlib
import io
import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import IO, Any, Callable, Optional, Union

import torch

try:
    import resource  # POSIX only: the file-size limit (ulimit -f)
except ImportError:                       # pragma: no cover (Windows)
    resource = None

PathLike = Union[str, os.PathLike]


class CorruptCheckpointError(ValueError):
    """The file exists but is not a readable checkpoint (truncated, damaged, or not a checkpoint)."""


class UnsafeCheckpointError(ValueError):
    """The file holds Python objects other than plain data, which ``weights_only`` loading refuses."""


class UnverifiedCheckpointError(ValueError):
    """The file carries no checksum of its contents, so a damaged or changed file could not be told apart."""


class UnverifiedCheckpointWarning(UserWarning):
    """A file without a checksum was loaded because the caller allowed it (``allow_unverified=True``)."""


class DiskFullError(OSError):
    """No space was left on the device while writing; the file that was there before is intact."""


class FileSizeLimitError(OSError):
    """The process's file-size limit (``ulimit -f``) stopped a write; the file that was there before is intact."""


CHECKSUM_KEY = "sha256"
TRAIN_FORMAT = "minidiff.train/2"          # a resumable training checkpoint (minidiff.train.Trainer.save)


def atomic_write(path: PathLike, write: Callable[[IO], Any], mode: str = "wb") -> None:
    """Call ``write(file)`` on a temporary file in ``path``'s folder, fsync it, then rename it onto
    ``path``: a crash at any moment leaves either the old file or the new one, never half of one.
    A full disk is a ``DiskFullError``, the file-size limit a ``FileSizeLimitError``."""
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
        written = Path(tmp.name).stat().st_size if Path(tmp.name).exists() else 0
        Path(tmp.name).unlink(missing_ok=True)
        kept = "the file that was there before (if any) is intact"
        limit = _file_size_limit()     # torch.save's report carries no errno: a file at the limit tells
        at_limit = _is_write_failure(err) and limit is not None and written >= limit
        if _is_write_failure(err, errno.EFBIG) or at_limit:
            raise FileSizeLimitError(errno.EFBIG, f"the file-size limit of this process (ulimit -f: "
                                     f"{_size(limit)}) stopped writing {path}; {kept}: raise the limit "
                                     f"(ulimit -f unlimited) or save a smaller file") from err
        if _is_write_failure(err, errno.ENOSPC) or _is_write_failure(err):
            raise DiskFullError(errno.ENOSPC, f"no space left on device while writing {path}; {kept}: free "
                                f"some space and save again") from err
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Replace the file ``path`` with ``data`` atomically (``atomic_write``), readable as a plain ``open``
    would have made it (the temporary file is private until then)."""
    atomic_write(path, lambda f: f.write(data))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
    return Path(path)


def atomic_write_text(path: PathLike, text: str) -> Path:
    """``atomic_write_bytes`` of ``text`` in UTF-8, its line endings kept as they are."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _is_write_failure(err: BaseException, code: Optional[int] = None) -> bool:
    """``err`` is an OSError with errno ``code``, or (``code`` None) torch.save's errno-less report of a
    failed write: "RuntimeError: [enforce fail at inline_container.cc] . unexpected pos"."""
    if code is not None:
        return isinstance(err, OSError) and err.errno == code
    return isinstance(err, RuntimeError) and "unexpected pos" in str(err)


def _file_size_limit() -> Optional[int]:
    if resource is None:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


def _size(n: Optional[int]) -> str:
    return "unknown" if n is None else f"{n:,} bytes"


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


# What weights-only loading rebuilds without a second look; anything else is tried once in memory.
PLAIN_TYPES = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.Size)


def check_loadable(state: Any, where: str = "state") -> None:
    """Raise TypeError, naming the entry (``state['cfg']``), unless ``torch.load(..., weights_only=True)``
    can read ``state`` back: tensors, dicts, lists, tuples, numbers, strings, bools and None."""
    if isinstance(state, torch.Tensor) or type(state) in PLAIN_TYPES:
        return
    if type(state) in (dict, collections.OrderedDict):
        for key, value in state.items():
            check_loadable(key, f"a key of {where}")
            check_loadable(value, f"{where}[{key!r}]")
        return
    if type(state) in (list, tuple):
        for i, item in enumerate(state):
            check_loadable(item, f"{where}[{i}]")
        return
    buffer = io.BytesIO()               # an unusual type: ask the loader itself
    try:
        torch.save(state, buffer)
        buffer.seek(0)
        torch.load(buffer, weights_only=True)
    except Exception:
        hint = " (a dataclass? store dataclasses.asdict(it))" if dataclasses.is_dataclass(state) else ""
        raise TypeError(f"{where} is a {type(state).__module__}.{type(state).__qualname__}, which "
                        f"load_checkpoint could not read back (weights-only loading rebuilds tensors and plain "
                        f"data only){hint}; nothing was written") from None


def save_checkpoint(path: PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (``atomic_write``), readable with ``load_checkpoint``.

    A state that ``load_checkpoint`` could not read back is a TypeError before anything is written."""
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict; got {type(state).__name__}")
    check_loadable(state)
    state = {**state, CHECKSUM_KEY: state_digest(state)}
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu",
                    allow_unverified: bool = False) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` with ``weights_only=True`` (data only, no code).

    Raises FileNotFoundError when ``path`` is missing, CorruptCheckpointError when it cannot be read
    or its contents do not match the checksum stored in it, UnsafeCheckpointError when it holds
    objects that weights-only loading refuses, and UnverifiedCheckpointError when it stores no
    checksum (``allow_unverified=True`` loads such a file with a warning; re-save it with
    ``save_checkpoint`` to give it one). The checksum key is removed from the returned dict."""
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
    if stored is None:
        message = (f"{path} carries no SHA-256 of its contents (it was not written by minidiff's save_checkpoint, "
                   f"or the checksum was removed), so a damaged or changed file cannot be told apart")
        if not allow_unverified:
            raise UnverifiedCheckpointError(f"{message}; it was not used. If you trust it, load it with "
                                            f"load_checkpoint(path, allow_unverified=True) and save it again "
                                            f"with save_checkpoint, which stores the checksum")
        warnings.warn(f"{message}; loaded unverified", UnverifiedCheckpointWarning, stacklevel=2)
    elif stored != state_digest(state):
        raise CorruptCheckpointError(f"{path} is corrupt: its contents do not match the SHA-256 stored in it when "
                                     f"it was written (the file was damaged or changed since); it was not used")
    return state


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "(no message)"
