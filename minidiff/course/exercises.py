r"""Automatic checks for the notebooks' exercises.

Each exercise cell defines a function; the cell after it hands that function to a check:

    q_step = md.exercises.check_q_step(q_step)

The check runs the function and minidiff's own implementation on a few fixed inputs (several
shapes, a batch of t and a single int t, the edges t = 0 and t = T−1, explicit noise) and then

* all cases match          → prints one line and returns the learner's function;
* NotImplementedError      → the exercise is not attempted yet: prints a note and returns
                             minidiff's reference, so the rest of the notebook still runs (under
                             nbgrader's autograde, where NBGRADER_EXECUTION is set, it fails instead);
* a wrong result or error  → raises ``ExerciseError`` naming the case, what differs (shape, dtype or
                             values, expected vs got, at "image 2 (t = 999), channel 0, row 3, column 5"),
                             the mistake when it is a common one, and the first hint.

For the learner:

    md.exercises.hint("q_sample", level=1)      # 1: the idea, 2: the formula, 3: nearly the code
    q_sample = md.exercises.use_reference("q_sample")   # minidiff's version, to run the rest first

For grading, ``check_q_sample(q_sample, hidden=True)`` runs further cases the notebook does not show
(nbgrader's hidden-tests region); there a function that is not attempted fails.

While a check runs the learner's function, minidiff's own implementation of that exercise raises
(``md.q_sample`` inside ``q_sample`` would pass without teaching anything). A failed check is
remembered: under IPython, an error in a later cell ends with a note naming the exercise it may
depend on, until a re-check passes.

``check`` is the generic core; ``check_q_step`` and friends are thin wrappers around it, and
``EXERCISES`` (at the end) holds each exercise's hints, common mistakes and minidiff's version.
"""
from __future__ import annotations

import copy
import importlib
import math
import os
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# Plain submodule imports: neither imports this module, so minidiff/__init__ may import us anywhere.
from .. import diffusion, schedules


class ExerciseError(AssertionError):
    """An exercise function gave a wrong answer (or crashed) on one of the check's cases.

    ``exercise`` names the exercise. In a notebook only the message is shown (``_render_traceback_``):
    the frames inside minidiff would bury it and say nothing about the learner's code."""

    def __init__(self, message: str, exercise: Optional[str] = None):
        super().__init__(message)
        self.exercise = exercise

    def _render_traceback_(self) -> list[str]:
        """What IPython shows for this error: the message alone, no traceback."""
        return f"{type(self).__name__}: {self}".splitlines()


@dataclass(frozen=True)
class Case:
    """One input to an exercise: ``fn(*args, **kwargs)``, described for error messages.

    ``batch_labels`` says what each image of the batch is (e.g. "t = 999"), for positions in words."""
    description: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    batch_labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Mistake:
    """A common wrong answer: ``wrong`` has the exercise's signature and makes the mistake ``description``
    says (in the notebook's words). When the learner's output matches it, the error names the mistake."""
    description: str
    wrong: Callable


@dataclass(frozen=True)
class Exercise:
    """What the checks know about one exercise beyond its cases."""
    name: str
    function: str                               # the learner's function's name in the notebook
    reference: Callable                         # what ``use_reference`` and a skipped exercise give
    hints: tuple[str, ...]                      # 1: the idea, 2: the formula, 3: nearly the code
    mistakes: tuple[Mistake, ...] = ()
    implemented_by: tuple[str, ...] = ()        # minidiff's own version(s), blocked while the check runs
    per_image_t: bool = False                   # takes a batch of t: shape errors point to md.extract


# -- hints, the reference, failures remembered ---------------------------------------------------
def hint(name: str, level: int = 1) -> str:
    """Print and return hint ``level`` for exercise ``name``: 1 the idea, 2 the formula, 3 nearly the code."""
    exercise = _exercise(name)
    levels = range(1, len(exercise.hints) + 1)
    if isinstance(level, bool) or level not in levels:
        raise ValueError(f"level must be one of {list(levels)} (1: the idea, 2: the formula, 3: nearly the code); "
                         f"got {level!r}")
    text = exercise.hints[level - 1]
    more = f" (md.exercises.hint({name!r}, {level + 1}) says more.)" if level < len(exercise.hints) else ""
    print(f"{name}, hint {level} of {len(exercise.hints)}: {text}{more}")
    return text


def use_reference(name: str) -> Callable:
    """minidiff's implementation of exercise ``name``, to run the rest of the notebook before finishing it:
    ``q_sample = md.exercises.use_reference("q_sample")``. (Graded checks do not accept it.)"""
    exercise = _exercise(name)
    _FAILED.pop(name, None)
    print(f"{name}: using minidiff's reference implementation for now; come back to {exercise.function} later.")
    return exercise.reference


def _exercise(name: str) -> Exercise:
    if name not in EXERCISES:
        raise ValueError(f"name must be one of the exercises {sorted(EXERCISES)}; got {name!r}")
    return EXERCISES[name]


def _advice(name: str) -> str:
    """The end of an ExerciseError: where the next hint is, and how to see the rest of the notebook first."""
    exercise = EXERCISES.get(name)
    if exercise is None:
        return ""
    return (f"\n  md.exercises.hint({name!r}, 2) shows the formula."
            f"\n  To run the rest of the notebook first, put `raise NotImplementedError` back as the body of "
            f"{exercise.function}, or use minidiff's version for now:"
            f"\n      {exercise.function} = md.exercises.use_reference({name!r})")


# Exercises whose last check failed, with its first line; a passing re-check removes the entry.
_FAILED: dict[str, str] = {}


def _failed(name: str, error: ExerciseError) -> ExerciseError:
    """Remember that ``name`` failed (for the note on later errors) and return ``error`` to raise."""
    error.exercise = error.exercise or name
    _FAILED[name] = str(error).splitlines()[0]
    _install_note_handler()
    return error


def _passed(name: str) -> None:
    _FAILED.pop(name, None)


def later_cell_note() -> Optional[str]:
    """The note an error in a later cell gets while some exercise is not right yet; None when none is."""
    if not _FAILED:
        return None
    names = " and ".join(f"'{n}'" for n in _FAILED)
    if len(_FAILED) == 1:
        return f"note: exercise {names} above is not right yet; this cell may depend on it."
    return f"note: exercises {names} above are not right yet; this cell may depend on them."


def _ipython() -> Any:
    """The running IPython shell, or None (plain Python, or IPython not installed)."""
    ipython = sys.modules.get("IPython")            # never imported here: outside IPython this is a no-op
    get = getattr(ipython, "get_ipython", None)
    return get() if get is not None else None


def _show_with_note(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: Optional[int] = None) -> None:
    """IPython's custom exception handler: the usual display, then the note about failed exercises
    (not under an ExerciseError, whose own message says what is wrong)."""
    shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
    note = later_cell_note()
    if note is not None and not isinstance(value, ExerciseError):
        print(note, file=sys.stderr)


def _install_note_handler() -> None:
    """Once per shell, and only where no other custom handler is installed."""
    shell = _ipython()
    if shell is None or getattr(shell, "_minidiff_exercise_note", False) or getattr(shell, "custom_exceptions", ()):
        return
    shell.set_custom_exc((Exception,), _show_with_note)
    shell._minidiff_exercise_note = True


# -- keeping minidiff's own version out of reach -------------------------------------------------
def _is_minidiffs(fn: Callable) -> bool:
    """Whether ``fn`` is minidiff's code (a reference), not a learner's."""
    module = getattr(fn, "__module__", None) or ""
    return module == "minidiff" or module.startswith("minidiff.")


def _resolve(path: str) -> tuple[Any, str, Any]:
    """``"minidiff.schedules.NoiseSchedule.cosine"`` → (its owner, the attribute name, the object)."""
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attr in parts[split:-1]:
            owner = getattr(owner, attr)
        return owner, parts[-1], getattr(owner, parts[-1])
    raise ValueError(f"path must name an attribute of an importable module; got {path!r}")


def _public_name(path: str, obj: Any) -> str:
    """How a notebook spells it: ``md.q_sample`` when exported at the top, else ``md.nn.blocks.film``."""
    parts, top = path.split(".")[1:], sys.modules.get("minidiff")
    for start in range(len(parts) - 1, 0, -1):      # the shortest tail that md itself reaches
        found = top
        for attr in parts[start:]:
            found = getattr(found, attr, None)
        if found is obj or (found is not None and found == obj):    # == for classmethods, bound anew each time
            return "md." + ".".join(parts[start:])
    return "md." + ".".join(parts)


def _blocker(name: str, label: str) -> Callable:
    def blocked(*args: Any, **kwargs: Any) -> Any:
        raise ExerciseError(f"{name} calls minidiff's own {label}: this exercise asks you to write it yourself, "
                            f"not to call minidiff's version (helpers such as md.extract are fine)." + _advice(name),
                            exercise=name)
    return blocked


def _block_sites(name: str, learner: Callable) -> list[tuple[Any, str, Any, Any]]:
    """(namespace, key, original, replacement) for every place minidiff's version of ``name`` is reachable
    by name: its owner, any minidiff module holding it, and the learner function's globals."""
    exercise = EXERCISES.get(name)
    if exercise is None or _is_minidiffs(learner):
        return []
    learner_globals = getattr(learner, "__globals__", None)
    modules = [m for key, m in list(sys.modules.items())
               if m is not None and (key == "minidiff" or key.startswith("minidiff.")) and key != __name__]
    sites = []
    for path in exercise.implemented_by:
        owner, attr, obj = _resolve(path)
        blocker = _blocker(name, _public_name(path, obj))
        if isinstance(owner, type):                 # a classmethod such as NoiseSchedule.cosine
            sites.append((owner, attr, owner.__dict__[attr], staticmethod(blocker)))
            continue
        namespaces = [vars(m) for m in modules] + ([learner_globals] if learner_globals is not None else [])
        for namespace in namespaces:
            for key, value in list(namespace.items()):
                if value is obj:
                    sites.append((namespace, key, value, blocker))
    return sites


@contextmanager
def _blocked(sites: Sequence[tuple[Any, str, Any, Any]]) -> Iterator[None]:
    """Within the block each site holds its blocker; afterwards, whatever happened, the original again."""
    def put(namespace: Any, key: str, value: Any) -> None:
        if isinstance(namespace, dict):
            namespace[key] = value
        else:
            setattr(namespace, key, value)
    done = []
    try:
        for namespace, key, original, replacement in sites:
            put(namespace, key, replacement)
            done.append((namespace, key, original))
        yield
    finally:
        for namespace, key, original in reversed(done):
            put(namespace, key, original)


# -- the generic core ---------------------------------------------------------------------------
def check(name: str, fn: Callable, reference: Callable, cases: Sequence[Case], hint: str,
          atol: float = 1e-5, rtol: float = 1e-4, output_names: Sequence[str] = (), *,
          hidden: bool = False, learner: Optional[Callable] = None) -> Callable:
    """Compare ``fn`` with ``reference`` on every case; return the function later cells should use.

    ``output_names`` names the elements when the reference returns a tuple (e.g. "mean", "variance").
    ``hidden``: the cases are the grader's hidden ones, so a skipped exercise fails. ``learner`` is the
    learner's own function when ``fn`` wraps it (its globals are searched for minidiff's version).
    When ``name`` is in ``EXERCISES``, common mistakes are recognised and minidiff's version is blocked.
    """
    if not callable(fn):
        raise TypeError(f"{name}: the check expects your function; got {type(fn).__name__}")
    if not cases:
        raise ValueError(f"{name}: cases must hold at least one Case; got none")
    learner = fn if learner is None else learner
    try:
        _refuse_the_reference_when_grading(name, learner, hidden)
        # A learner's stray torch.randn must not shift the random numbers of the notebook's later cells.
        with torch.random.fork_rng(devices=[]):
            expected = [_call(reference, case) for case in cases]       # before minidiff's version is blocked
            sites = _block_sites(name, learner)
            outputs: list[Any] = []                                     # the learner's, case by case
            for i, (case, want) in enumerate(zip(cases, expected), start=1):
                where = f"case {i} of {len(cases)}: {case.description}"
                try:
                    with _blocked(sites):
                        got = _call(fn, case)
                except NotImplementedError as exc:
                    return not_attempted(name, reference, exc, hidden)
                except ExerciseError:                            # a check inside the case said what is wrong
                    raise
                except Exception as exc:
                    raise ExerciseError(f"{name} raised an error on {where}\n  {type(exc).__name__}: {exc}"
                                        f"{_shape_advice(name, exc)}\n  Hint: {hint}{_advice(name)}", name) from exc
                outputs.append(got)
                problem = compare(expected=want, got=got, atol=atol, rtol=rtol, output_names=output_names,
                                  labels=case.batch_labels)
                if problem is not None:
                    outputs += [_output_or_none(fn, later, sites) for later in cases[i:]]
                    raise ExerciseError(f"{name} is not right yet, on {where}\n  {problem}"
                                        f"{_recognise(name, cases, outputs, i - 1, atol, rtol, output_names)}"
                                        f"{_shape_advice(name, problem)}\n  Hint: {hint}{_advice(name)}", name)
    except ExerciseError as error:
        raise _failed(name, error)
    _passed(name)
    _print_success(name, len(cases), hidden, "correct on {} test cases")
    return fn


def _print_success(name: str, count: int, hidden: bool, visible: str) -> None:
    print(f"✓ {name}: hidden tests pass ({count} more cases)." if hidden else f"✓ {name}: {visible.format(count)}.")


def _refuse_the_reference_when_grading(name: str, learner: Callable, hidden: bool) -> None:
    """Graded (hidden tests, or nbgrader): minidiff's own function stands for no work, so it scores 0."""
    if name in EXERCISES and _is_minidiffs(learner) and (hidden or os.environ.get("NBGRADER_EXECUTION")):
        raise ExerciseError(f"{name}: the function checked is minidiff's own (md.exercises.use_reference, or the "
                            f"stand-in for an exercise not attempted), not yours, so this check scores 0", name)


def _output_or_none(fn: Callable, case: Case, sites: Sequence[tuple[Any, str, Any, Any]] = ()) -> Any:
    """``fn`` on ``case``, or None where it raises (quietly, and without moving the RNG)."""
    try:
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]), _blocked(sites):
            warnings.simplefilter("ignore")
            return _call(fn, case)
    except Exception:
        return None


def _recognise(name: str, cases: Sequence[Case], outputs: Sequence[Any], failing: int, atol: float, rtol: float,
               output_names: Sequence[str]) -> str:
    """A line naming the common mistake that explains the learner's ``outputs``, or "". A mistake must match on
    the failing case and on every other case where both ran: one case alone can be too close to call (at
    t = 0, ᾱ_t ≈ 1 and many formulas nearly agree)."""
    exercise = EXERCISES.get(name)
    for mistake in exercise.mistakes if exercise is not None else ():
        wrong = [_output_or_none(mistake.wrong, case) for case in cases]
        if wrong[failing] is None:                  # this mistake cannot even run on the case: not it
            continue
        if all(w is None or got is None or compare(w, got, atol, rtol, output_names) is None
               for w, got in zip(wrong, outputs)):
            return f"\n  This looks like a common mistake: {mistake.description}."
    return ""


def _shape_advice(name: str, problem: Any) -> str:
    """For exercises with a batch of t: a broadcasting failure or a wrong shape points to md.extract."""
    exercise = EXERCISES.get(name)
    text = str(problem)
    shape_trouble = (text.startswith("wrong shape") or "size of tensor" in text
                     or "must match the size" in text or "broadcast" in text)
    if exercise is None or not exercise.per_image_t or not shape_trouble:
        return ""
    return ("\n  With a batch of t, each image needs its own coefficient: md.extract(table, t, x) gives table[t] "
            "shaped (B, 1, 1, 1), which broadcasts over each image (a plain table[t] has shape (B,) and lines up "
            "with the images' columns instead).")


def not_attempted(name: str, reference: Callable, exc: NotImplementedError, hidden: bool = False) -> Callable:
    """The exercise still raises NotImplementedError: the reference stands in for it (an ExerciseError,
    scoring 0, under nbgrader's autograde and in the hidden tests)."""
    if hidden:
        raise _failed(name, ExerciseError(f"{name} was not attempted: the exercise cell still raises "
                                          f"NotImplementedError, so the hidden tests score 0", name)) from exc
    if os.environ.get("NBGRADER_EXECUTION"):        # set by nbgrader's autograde and validate
        raise _failed(name, ExerciseError(f"{name} was not attempted: the exercise cell still raises "
                                          f"NotImplementedError, so this check scores 0", name)) from exc
    _passed(name)
    print(f"{name}: not attempted yet — using minidiff's reference implementation so the "
          f"rest of the notebook runs. (Replace the raise in the exercise cell to try it.)")
    return reference


Property = tuple[str, Callable[[Callable], Optional[str]]]      # (what it checks, test(fn) -> problem or None)


def check_properties(name: str, fn: Callable, reference: Callable, properties: Sequence[Property],
                     hint: str, *, hidden: bool = False) -> Callable:
    """Like ``check``, for a function whose output is random: each property calls ``fn`` itself and
    returns what is wrong (one line) or None. The reference must pass them all (a unit test checks)."""
    if not callable(fn):
        raise TypeError(f"{name}: the check expects your function; got {type(fn).__name__}")
    try:
        _refuse_the_reference_when_grading(name, fn, hidden)
        sites = _block_sites(name, fn)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            for i, (description, test) in enumerate(properties, start=1):
                where = f"check {i} of {len(properties)}: {description}"
                try:
                    with _blocked(sites):
                        problem = test(fn)
                except NotImplementedError as exc:
                    return not_attempted(name, reference, exc, hidden)
                except ExerciseError:
                    raise
                except Exception as exc:
                    raise ExerciseError(f"{name} raised an error on {where}\n  {type(exc).__name__}: {exc}"
                                        f"\n  Hint: {hint}{_advice(name)}", name) from exc
                if problem is not None:
                    raise ExerciseError(f"{name} is not right yet, on {where}\n  {problem}"
                                        f"\n  Hint: {hint}{_advice(name)}", name)
    except ExerciseError as error:
        raise _failed(name, error)
    _passed(name)
    _print_success(name, len(properties), hidden, "passes all {} checks")
    return fn


def _call(fn: Callable, case: Case) -> Any:
    """``fn`` on a private copy of the case's inputs, so in-place edits cannot leak between calls."""
    args, kwargs = copy.deepcopy((case.args, case.kwargs))
    return fn(*args, **kwargs)


def compare(expected: Any, got: Any, atol: float, rtol: float,
            output_names: Sequence[str] = (), labels: Sequence[str] = ()) -> Optional[str]:
    """What is wrong with ``got`` (one line), or None when it matches ``expected``."""
    if not isinstance(expected, tuple):
        return compare_tensors(expected, got, atol, rtol, labels)
    names = list(output_names) or [f"element {i}" for i in range(len(expected))]
    if not isinstance(got, (tuple, list)) or len(got) != len(expected):
        length = f" of length {len(got)}" if isinstance(got, (tuple, list)) else ""
        return f"wrong return value: expected a tuple ({', '.join(names)}), got a {type(got).__name__}{length}"
    for element, e, g in zip(names, expected, got):
        problem = compare_tensors(e, g, atol, rtol, labels)
        if problem is not None:
            return f"{element}: {problem}"
    return None


def compare_tensors(expected: Tensor, got: Any, atol: float, rtol: float,
                    labels: Sequence[str] = ()) -> Optional[str]:
    """Shape, then dtype, then values (``torch.isclose`` with ``atol``/``rtol``); None when all agree.
    ``labels`` says what each image of a batch is, for the position of the largest error."""
    if not isinstance(got, Tensor):
        return f"wrong type: expected a torch.Tensor, got {type(got).__name__}"
    if got.shape != expected.shape:
        return f"wrong shape: expected {tuple(expected.shape)}, got {tuple(got.shape)}"
    if got.dtype != expected.dtype:
        note = ""
        if got.dtype == torch.float64:
            note = " (the schedule's tables are float64: cast coefficients to the image's dtype, .to(x.dtype))"
        return f"wrong dtype: expected {expected.dtype}, got {got.dtype}{note}"
    close = torch.isclose(got, expected, atol=atol, rtol=rtol, equal_nan=True)
    if close.all():
        return None
    error = torch.where(close, 0.0, (got - expected).abs().nan_to_num(nan=float("inf")))
    at = tuple(int(i) for i in torch.unravel_index(error.argmax(), error.shape))
    return (f"wrong values: {int((~close).sum())} of {close.numel()} entries differ, largest abs error "
            f"{error.max().item():.3g} at {position(at, labels)}: expected {expected[at].item():.6g}, got "
            f"{got[at].item():.6g} (tolerance atol={atol:g}, rtol={rtol:g})")


def position(at: tuple[int, ...], labels: Sequence[str] = ()) -> str:
    """An index in the learner's terms: ``image 2 (t = 999), channel 0, row 3, column 5`` for an image batch,
    ``index (9,)`` otherwise."""
    if len(at) != 4:
        return f"index {at}"
    b, c, row, column = at
    label = f" ({labels[b]})" if b < len(labels) else ""
    return f"image {b}{label}, channel {c}, row {row}, column {column}"


def describe(**inputs: Any) -> str:
    """A case's inputs in words: ``x_prev shape (2, 1, 4, 4), t=tensor([0, 9]), schedule=cosine (T=10)``."""
    return ", ".join(_describe_one(name, value) for name, value in inputs.items())


def _describe_one(name: str, value: Any) -> str:
    if isinstance(value, schedules.NoiseSchedule):
        return f"{name}={value.name} (T={value.num_steps})"
    if isinstance(value, torch.nn.Module):
        return f"{name}=a small {type(value).__name__}"
    if isinstance(value, Tensor) and value.is_floating_point():
        return f"{name} shape {tuple(value.shape)}"
    if isinstance(value, Tensor):                   # timesteps, without repr's column padding
        return f"{name}=tensor({value.tolist()})"
    return f"{name}={value!r}"


def t_labels(t: Any, batch: int) -> tuple[str, ...]:
    """``("t = 0", "t = 999")``: what each image of a batch is, for positions in words."""
    values = t.tolist() if isinstance(t, Tensor) and t.ndim else [int(t)] * batch
    return tuple(f"t = {v}" for v in values)


def _at(table: Tensor, t: Any, x: Tensor) -> Tensor:
    """table[t] as a learner indexes it (no range check: t − 1 wraps around), cast and shaped per image."""
    return table[t].to(x.dtype).reshape(-1, *(1,) * (x.ndim - 1))


def _flat(table: Tensor, t: Any, x: Tensor) -> Tensor:
    """table[t] cast but not shaped per image: (B,), which lines up with the images' columns."""
    return table[t].to(x.dtype)


# -- inputs shared by the image exercises --------------------------------------------------------
# (image shape, t, schedule): an int t and batches of t, the edges t = 0 and t = T−1, unsorted t.
_IMAGE_CASES = [
    ((2, 1, 4, 4), 0, ("linear", 1000)),
    ((3, 1, 8, 8), [0, 10, 999], ("linear", 1000)),
    ((4, 1, 28, 28), [0, 10, 500, 999], ("cosine", 1000)),
    ((2, 3, 6, 6), 999, ("cosine", 1000)),
    ((5, 2, 4, 4), [49, 0, 25, 1, 48], ("sigmoid", 50)),
]

# The hidden ones: other seeds and shapes, B = W (a coefficient of shape (B,) then broadcasts silently
# over the columns instead of failing), a single image, the shortest schedules.
_HIDDEN_IMAGE_CASES = [
    ((4, 1, 4, 4), [999, 0, 500, 1], ("linear", 1000)),
    ((1, 3, 5, 7), [998], ("cosine", 1000)),
    ((6, 1, 2, 2), [5, 4, 3, 2, 1, 0], ("sigmoid", 6)),
    ((3, 2, 3, 3), 1, ("linear", 2)),
]


# Float32 images: a learner may cast the float64 tables to float32 before the arithmetic, and 1 − ᾱ_t
# then loses up to ~1e-3 of its relative precision near t = 0 (ᾱ_0 ≈ 1), so allow for that.
IMAGE_TOLERANCE = {"atol": 2e-4, "rtol": 2e-3}


def image_cases(arg_names: Sequence[str], hidden: bool = False) -> list[Case]:
    """Cases with positional args named ``arg_names``: "t", "schedule", or else an image (seeded N(0, I))."""
    settings, first_seed = (_HIDDEN_IMAGE_CASES, 100) if hidden else (_IMAGE_CASES, 0)
    cases = []
    for seed, (shape, t, (kind, num_steps)) in enumerate(settings, start=first_seed):
        generator = torch.Generator().manual_seed(seed)
        fixed = {"t": torch.tensor(t) if isinstance(t, list) else t,
                 "schedule": schedules.make_schedule(kind, num_steps)}
        inputs = {n: fixed[n] if n in fixed else torch.randn(shape, generator=generator) for n in arg_names}
        cases.append(Case(describe(**inputs), tuple(inputs.values()), batch_labels=t_labels(fixed["t"], shape[0])))
    return cases


def _schedule_betas_cases(hidden: bool = False) -> list[Case]:
    """β tables of several schedules and lengths, plus a tiny hand-made one."""
    if hidden:
        tables = [schedules.NoiseSchedule.linear(1), schedules.NoiseSchedule.cosine(2),
                  schedules.NoiseSchedule.cosine(1000), schedules.NoiseSchedule.sigmoid(7)]
        hand_made = torch.tensor([0.9, 0.01, 0.3, 0.999], dtype=torch.float64)
    else:
        tables = [schedules.NoiseSchedule.linear(10), schedules.NoiseSchedule.cosine(10),
                  schedules.NoiseSchedule.linear(1000), schedules.NoiseSchedule.sigmoid(20)]
        hand_made = torch.tensor([0.5, 0.25, 0.1], dtype=torch.float64)
    cases = [Case(f"betas of the {s.name} schedule, T={s.num_steps} (float64)", (s.betas,))
             for s in tables]
    return cases + [Case(f"betas={hand_made!r}", (hand_made,))]


# -- notebook 01: the forward process ------------------------------------------------------------
HINT_Q_STEP = ("x_t = √α_t·x_prev + √β_t·noise with α_t = 1 − β_t = s.alphas[t] and β_t = s.betas[t] (step t's"
               " own α_t, not ᾱ_t = s.alphas_cumprod[t]). Use the noise you are given; for t of shape (B,) each"
               " image needs its own coefficient: md.extract(s.betas, t, x_prev) gives β_t shaped (B, 1, 1, 1),"
               " in x_prev's dtype.")


def check_q_step(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(x_prev, t, s, noise) -> x_t``, one forward step, against ``minidiff.q_step``."""
    cases = image_cases(("x_prev", "t", "schedule", "noise"), hidden)
    return check("q_step", fn, diffusion.q_step, cases, _first_hint("q_step"), **IMAGE_TOLERANCE, hidden=hidden)


def _first_hint(name: str) -> str:
    return EXERCISES[name].hints[0]


# -- notebook 02: the closed form and the posterior ----------------------------------------------
HINT_ALPHAS_CUMPROD = ("ᾱ_t = ∏_{s≤t} (1 − β_s): a running *product* (torch.cumprod(..., dim=0)) of"
                       " α = 1 − β, including step t itself, so ᾱ_0 = 1 − β_0. Return one value per β,"
                       " in float64.")

HINT_Q_SAMPLE = ("x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·noise with ᾱ_t = s.alphas_cumprod[t] (the running product,"
                 " not α_t = s.alphas[t]) at exactly t (0-indexed: no t − 1 or t + 1). Use the noise you are given;"
                 " for t of shape (B,) use md.extract(s.alphas_cumprod, t, x0), which gives ᾱ_t shaped"
                 " (B, 1, 1, 1) in x0's dtype.")

HINT_POSTERIOR_MEAN = ("μ̃_t = √ᾱ_{t−1}·β_t/(1 − ᾱ_t)·x0 + √α_t·(1 − ᾱ_{t−1})/(1 − ᾱ_t)·x_t — x0 takes"
                       " the β_t coefficient, x_t the √α_t one. ᾱ_{t−1} is s.alphas_cumprod_prev[t],"
                       " which is 1 at t = 0 (s.alphas_cumprod[t − 1] wraps around to the last entry there);"
                       " ᾱ_t = s.alphas_cumprod[t], β_t = s.betas[t], α_t = s.alphas[t].")


def check_alphas_cumprod(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(betas) -> alphas_cumprod`` (1-D float64, same length) against ``cumprod(1 - betas)``."""
    return check("alphas_cumprod", fn, _reference_alphas_cumprod, _schedule_betas_cases(hidden),
                 _first_hint("alphas_cumprod"), hidden=hidden)


def _reference_alphas_cumprod(betas: Tensor) -> Tensor:
    return torch.cumprod(1.0 - betas, dim=0)


def check_q_sample(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(x0, t, s, noise) -> x_t``, the closed-form jump, against ``minidiff.q_sample``."""
    cases = image_cases(("x0", "t", "schedule", "noise"), hidden)
    return check("q_sample", fn, diffusion.q_sample, cases, _first_hint("q_sample"), **IMAGE_TOLERANCE,
                 hidden=hidden)


def check_posterior_mean(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(x0, x_t, t, s) -> mean of q(x_{t−1} | x_t, x_0)`` against ``minidiff.q_posterior``."""
    cases = image_cases(("x0", "x_t", "t", "schedule"), hidden)
    return check("posterior_mean", fn, _reference_posterior_mean, cases, _first_hint("posterior_mean"),
                 **IMAGE_TOLERANCE, hidden=hidden)


_q_posterior = diffusion.q_posterior            # bound here: the check blocks diffusion.q_posterior itself


def _reference_posterior_mean(x0: Tensor, x_t: Tensor, t: schedules.Timesteps,
                              s: schedules.NoiseSchedule) -> Tensor:
    return _q_posterior(x0, x_t, t, s)[0]


# -- notebook 03: schedules ---------------------------------------------------------------------
HINT_COSINE = ("ᾱ(u) = cos²((u + s)/(1 + s)·π/2) at the T + 1 points u = t/T, t = 0 … T; then "
               "β_t = 1 − ᾱ((t+1)/T)/ᾱ(t/T) for t = 0 … T−1, clipped to at most max_beta "
               "(.clamp(max=max_beta)). Keep the offset s, compute in float64, return T values.")


def check_cosine_schedule(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(num_steps, s=0.008, max_beta=0.999) -> betas`` against ``NoiseSchedule.cosine().betas``."""
    settings = ([(1, {}), (2, {}), (50, {"max_beta": 0.2}), (7, {"s": 0.1})] if hidden else
                [(10, {}), (100, {}), (1000, {}), (100, {"s": 0.02}), (20, {"s": 0.0, "max_beta": 0.5})])
    cases = [Case(describe(num_steps=n, **kwargs), (n,), kwargs) for n, kwargs in settings]
    return check("cosine_schedule", fn, _reference_cosine_betas, cases, _first_hint("cosine_schedule"), hidden=hidden)


_cosine = schedules.NoiseSchedule.cosine        # bound here: the check blocks NoiseSchedule.cosine itself


def _reference_cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    return _cosine(num_steps, s=s, max_beta=max_beta).betas


# -- notebook 04: the U-Net ---------------------------------------------------------------------
HINT_EMBEDDING = ("ω_i = max_period^(−i/h) for i = 0 … h−1 with h = dim/2 (torch.exp(−log(max_period)·i/h)); "
                  "angles = t[:, None]·ω[None, :] in float32; return torch.cat([cos(angles), sin(angles)], dim=1) "
                  "— cosines first, shape (B, dim).")

HINT_INJECT_TIME = ("Apply SiLU to emb, then emb_layer: (B, 2C). The first C columns are the scale γ, the last C "
                    "the shift β (.chunk(2, dim=1)); reshape both to (B, C, 1, 1) and return h·(1 + γ) + β — "
                    "note the 1 +, and that the SiLU comes before the linear layer.")


def check_timestep_embedding(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(t, dim, max_period=10000) -> (B, dim)`` against ``minidiff.timestep_embedding`` (even dims)."""
    from ..nn.embedding import timestep_embedding
    settings = ([([7], 4, {}), ([0, 999, 123], 32, {"max_period": 1000}), ([1, 2, 3, 4, 5], 256, {})] if hidden else
                [([0, 1, 2], 2, {}), ([0, 10, 500, 999], 8, {}), ([3, 999], 64, {}),
                 ([0, 250, 999], 128, {}), ([5, 50], 16, {"max_period": 100})])
    cases = [Case(describe(t=torch.tensor(t), dim=d, **kw), (torch.tensor(t), d), kw) for t, d, kw in settings]
    return check("timestep_embedding", fn, timestep_embedding, cases, _first_hint("timestep_embedding"),
                 atol=1e-4, rtol=1e-4, hidden=hidden)


def check_inject_time(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(h, emb, emb_layer) -> h·(1 + γ) + β`` (FiLM) against the U-Net's ``film``."""
    from ..nn.blocks import film
    settings = [(4, 8, 5, 12), (2, 2, 1, 4)] if hidden else [(2, 4, 3, 8), (3, 16, 7, 32), (1, 8, 14, 16)]
    cases = []
    with torch.random.fork_rng(devices=[]):            # seeded layers without touching the notebook's RNG
        for seed, (b, c, hw, e) in enumerate(settings, start=100 if hidden else 0):
            torch.manual_seed(seed)
            h, emb, layer = torch.randn(b, c, hw, hw), torch.randn(b, e), torch.nn.Linear(e, 2 * c)
            cases.append(Case(describe(h=h, emb=emb) + f", emb_layer=Linear({e}, {2 * c})", (h, emb, layer)))
    return check("inject_time", fn, film, cases, _first_hint("inject_time"), hidden=hidden)


# -- notebook 05: training ----------------------------------------------------------------------
HINT_TRAINING_LOSS = ("x_t = md.q_sample(x0, t, s, noise) (√ᾱ_t·x0 + √(1 − ᾱ_t)·noise); the network sees x_t "
                      "and t — not x0 — and predicts the noise: return ((model(x_t, t) − noise)²).mean(), "
                      "a mean over every pixel of the batch (not a sum, and not against x0).")


class _TinyDenoiser(torch.nn.Module):
    """A small deterministic stand-in for a U-Net: a conv whose output depends on x_t and on t."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.conv(x) * (1 + t.float().view(-1, 1, 1, 1) / 1000)


def check_training_loss(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(model, x0, t, noise, s) -> scalar`` against ``minidiff.diffusion_loss`` with the same t and ε."""
    settings = ([((5, 1, 4, 4), [0, 0, 999, 999, 500], "sigmoid"), ((1, 2, 8, 8), [123], "linear")] if hidden else
                [((4, 1, 8, 8), [0, 10, 500, 999], "linear"), ((3, 3, 6, 6), [999, 1, 250], "cosine")])
    cases = []
    with torch.random.fork_rng(devices=[]):            # seeded models without touching the notebook's RNG
        for seed, (shape, t, kind) in enumerate(settings, start=100 if hidden else 0):
            torch.manual_seed(seed)
            model, x0, noise = _TinyDenoiser(shape[1]), torch.randn(shape), torch.randn(shape)
            s = schedules.make_schedule(kind, 1000)
            inputs = dict(model=model, x0=x0, t=torch.tensor(t), noise=noise, schedule=s)
            cases.append(Case(describe(**inputs), tuple(inputs.values())))
    return check("training_loss", fn, _reference_training_loss, cases, _first_hint("training_loss"),
                 **IMAGE_TOLERANCE, hidden=hidden)


def _reference_training_loss(model: Callable, x0: Tensor, t: Tensor, noise: Tensor,
                             s: schedules.NoiseSchedule) -> Tensor:
    from ..losses import diffusion_loss
    return diffusion_loss(model, x0, s, t=t, noise=noise)


# -- notebook 06: sampling ----------------------------------------------------------------------
HINT_DDPM_STEP = ("mean = (x_t − β_t/√(1 − ᾱ_t)·eps)/√α_t, then add √β_t·noise — except at t = 0, where the "
                  "step returns the mean alone (DDPM Algorithm 2). β_t = s.betas[t], α_t = s.alphas[t], "
                  "ᾱ_t = s.alphas_cumprod[t]; md.extract(table, t, x_t) casts them to x_t's dtype.")

HINT_DDIM_STEP = ("x̂_0 = (x_t − √(1 − ᾱ_t)·eps)/√ᾱ_t; σ = eta·√((1 − ᾱ')/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ') with ᾱ' = "
                  "ᾱ_{t_prev} = s.alphas_cumprod[t_prev], or 1 when t_prev = −1; return "
                  "√ᾱ'·x̂_0 + √(1 − ᾱ' − σ²)·eps + σ·noise.")


def _sampler_cases(with_prev: bool, hidden: bool = False) -> list[Case]:
    if hidden:
        settings = [(998, 0, 0.3, "sigmoid"), (2, -1, 1.0, "linear"), (999, -1, 0.0, "cosine"), (3, 2, 0.0, "sigmoid")]
        shape, first_seed = (2, 3, 5, 5), 100
    else:
        settings = [(999, 899, 0.0, "linear"), (500, -1, 0.0, "cosine"), (10, 9, 1.0, "linear"),
                    (700, 300, 0.5, "cosine"), (1, 0, 0.0, "linear"), (0, -1, 0.0, "cosine")]
        shape, first_seed = (3, 1, 6, 6), 0
    cases = []
    for seed, (t, t_prev, eta, kind) in enumerate(settings, start=first_seed):
        g = torch.Generator().manual_seed(seed)
        x_t, eps, noise = (torch.randn(shape, generator=g) for _ in range(3))
        s = schedules.make_schedule(kind, 1000)
        if with_prev:
            inputs = dict(x_t=x_t, eps=eps, t=t, t_prev=t_prev, schedule=s, eta=eta, noise=noise)
        else:
            inputs = dict(x_t=x_t, eps=eps, t=t, schedule=s, noise=noise)
        cases.append(Case(describe(**inputs), tuple(inputs.values()), batch_labels=t_labels(t, shape[0])))
    return cases


def check_ddpm_step(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(x_t, eps, t, s, noise) -> x_{t-1}`` against ``minidiff.ddpm_step`` (variance β_t, no clipping)."""
    return check("ddpm_step", fn, _reference_ddpm_step, _sampler_cases(with_prev=False, hidden=hidden),
                 _first_hint("ddpm_step"), **IMAGE_TOLERANCE, hidden=hidden)


def _reference_ddpm_step(x_t: Tensor, eps: Tensor, t: int, s: schedules.NoiseSchedule, noise: Tensor) -> Tensor:
    from ..samplers import ddpm_step
    return ddpm_step(x_t, eps, t, s, noise=noise)


def check_ddim_step(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(x_t, eps, t, t_prev, s, eta, noise) -> x_{t_prev}`` against ``minidiff.ddim_step``."""
    return check("ddim_step", fn, _reference_ddim_step, _sampler_cases(with_prev=True, hidden=hidden),
                 _first_hint("ddim_step"), **IMAGE_TOLERANCE, hidden=hidden)


def _reference_ddim_step(x_t: Tensor, eps: Tensor, t: int, t_prev: int, s: schedules.NoiseSchedule, eta: float,
                         noise: Tensor) -> Tensor:
    from ..samplers import ddim_step
    return ddim_step(x_t, eps, t, t_prev, s, eta=eta, noise=noise)


# -- notebook 07: classifier-free guidance ------------------------------------------------------
HINT_GUIDED_PREDICTION = ("One forward pass: out = model(torch.cat([x_t, x_t]), torch.cat([t, t]), "
                          "torch.cat([y, null])) with null = torch.full_like(y, null_label); cond, uncond = "
                          "out.chunk(2); return uncond + w·(cond − uncond) — w multiplies the difference "
                          "(conditional minus unconditional), and w = 0 must give the unconditional output.")

HINT_DROP_LABELS = ("Draw one uniform number per label (torch.rand(y.shape, device=y.device)); where it is below "
                    "p_uncond put null_label, elsewhere keep y (torch.where). Return a new tensor: each label is "
                    "dropped on its own, not the whole batch at once, and y itself is left unchanged.")

HINT_RESCALED = ("x_cfg = uncond + w·(cond − uncond); σ(·) is each image's standard deviation over all its "
                 "values (x.flatten(1).std(dim=1), reshaped to (B, 1, 1, 1)), not the batch's; "
                 "x_re = x_cfg·σ(cond)/σ(x_cfg); return φ·x_re + (1 − φ)·x_cfg.")


class _TinyConditional(torch.nn.Module):
    """A small deterministic stand-in for a conditional U-Net: a conv plus a per-label offset. It
    records the batch size of every call, so a check can tell one batched pass from two."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.label = torch.nn.Embedding(num_classes + 1, channels)
        self.calls: list[int] = []

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        self.calls.append(x.shape[0])
        return self.conv(x) * (1 + t.float().view(-1, 1, 1, 1) / 1000) + self.label(y)[:, :, None, None]


def check_guided_prediction(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(model, x_t, t, y, null_label, w) -> ε̃`` against ``cfg_mix`` of the conditional and the
    null-label output, and that it calls the model once, on the batch of 2B."""
    settings = [(1, 2, 3, 2.0), (6, 1, 4, 0.5)] if hidden else [(2, 1, 6, 3.0), (3, 3, 4, 0.0), (4, 1, 8, 1.0), (5, 2, 4, 7.5)]
    cases = []
    with torch.random.fork_rng(devices=[]):
        for seed, (b, c, hw, w) in enumerate(settings, start=100 if hidden else 0):
            torch.manual_seed(seed)
            model, x_t = _TinyConditional(c, 10), torch.randn(b, c, hw, hw)
            t, y = torch.randint(0, 1000, (b,)), torch.randint(0, 10, (b,))
            inputs = dict(model=model, x_t=x_t, t=t, y=y, null_label=10, w=w)
            cases.append(Case(describe(**inputs), tuple(inputs.values())))

    def one_pass(model, x_t, t, y, null_label, w):
        model.calls.clear()
        out = fn(model, x_t, t, y, null_label, w)
        if model.calls != [2 * len(x_t)]:
            raise ExerciseError(f"guided_prediction called the model {len(model.calls)} time(s), on batches of "
                                f"{model.calls}, for {len(x_t)} images; it should call it once, on the batch of "
                                f"{2 * len(x_t)} (conditional and unconditional together).\n  Hint: {_first_hint('guided_prediction')}"
                                f"{_advice('guided_prediction')}", "guided_prediction")
        return out
    checked = check("guided_prediction", one_pass, _reference_guided_prediction, cases,
                    _first_hint("guided_prediction"), hidden=hidden, learner=fn)
    return fn if checked is one_pass else checked


def _reference_guided_prediction(model: Callable, x_t: Tensor, t: Tensor, y: Tensor, null_label: int,
                                 w: float) -> Tensor:
    from ..guidance import cfg_mix
    both = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null_label)]))
    return cfg_mix(*both.chunk(2), w)


def check_drop_labels(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(y, p_uncond, null_label) -> labels`` (random) by its properties: p = 0 and p = 1, the
    fraction dropped, each label dropped on its own, kept labels unchanged, y itself untouched."""
    y = torch.arange(40_000) % 10

    def same_labels(p: float, expected: Tensor, what: str) -> Callable[[Callable], Optional[str]]:
        def test(f: Callable) -> Optional[str]:
            problem = compare_tensors(expected, f(y.clone(), p, 10), 0, 0)
            return problem and f"with p_uncond={p} {what}: {problem}"
        return test

    def fraction(f: Callable) -> Optional[str]:
        out = f(y.clone(), 0.25, 10)
        if not isinstance(out, Tensor) or out.shape != y.shape or out.dtype != y.dtype:
            return f"expected a {y.dtype} tensor of shape {tuple(y.shape)}; got {getattr(out, 'dtype', type(out).__name__)} {tuple(getattr(out, 'shape', ()))}"
        kept, dropped = out == y, out == 10
        if not bool((kept | dropped).all()):
            return "some labels were changed to something other than the null label 10"
        share = dropped.float().mean().item()
        if not 0.24 <= share <= 0.26:
            whole = " (0 or 1: the whole batch was dropped at once?)" if share in (0.0, 1.0) else ""
            return f"with p_uncond=0.25, {share:.1%} of 40,000 labels were dropped{whole}; expected about 25%"
        per_class = [dropped[y == k].float().mean().item() for k in range(10)]
        if max(per_class) - min(per_class) > 0.04:
            return f"the share dropped differs by class ({min(per_class):.1%} to {max(per_class):.1%}); every label should be dropped with the same probability"
        return None

    def independent(f: Callable) -> Optional[str]:
        a, b = f(y.clone(), 0.5, 10), f(y.clone(), 0.5, 10)
        return "two calls dropped exactly the same labels: draw fresh random numbers each call" if torch.equal(a, b) else None

    def untouched(f: Callable) -> Optional[str]:
        labels = y.clone()
        f(labels, 0.5, 10)
        return "y itself was modified (in place); return a new tensor and leave y as it was" if not torch.equal(labels, y) else None

    def other_rate(f: Callable) -> Optional[str]:
        out = f(y.clone(), 0.6, 99)
        if not isinstance(out, Tensor) or out.shape != y.shape:
            return f"expected a tensor of shape {tuple(y.shape)}; got {type(out).__name__} {tuple(getattr(out, 'shape', ()))}"
        if not bool(((out == y) | (out == 99)).all()):
            return "some labels were changed to something other than the null label 99"
        share = (out == 99).float().mean().item()
        return None if 0.59 <= share <= 0.61 else f"{share:.1%} of 40,000 labels were dropped; expected about 60%"

    properties = [("p_uncond=0 keeps every label", same_labels(0.0, y, "every label should be kept")),
                  ("p_uncond=1 drops every label", same_labels(1.0, torch.full_like(y, 10), "every label should be the null label")),
                  ("p_uncond=0.25 drops about a quarter of the labels, each on its own", fraction),
                  ("each call draws anew", independent),
                  ("y itself is left unchanged", untouched)]
    if hidden:
        properties = [("p_uncond=0.6 with null label 99 drops about 60% of the labels", other_rate)]
    return check_properties("drop_labels", fn, _reference_drop_labels, properties, _first_hint("drop_labels"),
                            hidden=hidden)


def _reference_drop_labels(y: Tensor, p_uncond: float, null_label: int) -> Tensor:
    from ..guidance import drop_labels
    return drop_labels(y, p_uncond, null_label)


def check_rescaled_guidance(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(cond, uncond, w, phi) -> guided`` against ``guidance.Rescaled(w, phi)`` (Lin et al. 2024)."""
    settings = ([((1, 1, 4, 4), 2.0, 0.3), ((3, 2, 5, 5), 0.0, 0.7), ((5, 1, 3, 3), 12.0, 0.9)] if hidden else
                [((2, 1, 8, 8), 3.0, 0.7), ((3, 3, 4, 4), 7.5, 1.0), ((2, 1, 6, 6), 5.0, 0.0), ((4, 2, 4, 4), 1.0, 0.5)])
    cases = []
    for seed, (shape, w, phi) in enumerate(settings, start=100 if hidden else 0):
        g = torch.Generator().manual_seed(seed)
        scale = torch.logspace(-1, 1, shape[0]).view(-1, 1, 1, 1)        # images of very different spread
        cond, uncond = scale * torch.randn(shape, generator=g), scale * torch.randn(shape, generator=g)
        inputs = dict(cond=cond, uncond=uncond, w=w, phi=phi)
        cases.append(Case(describe(**inputs), tuple(inputs.values())))

    return check("rescaled_guidance", fn, _reference_rescaled_guidance, cases, _first_hint("rescaled_guidance"),
                 hidden=hidden)


def _reference_rescaled_guidance(cond: Tensor, uncond: Tensor, w: float, phi: float) -> Tensor:
    from ..guidance import Rescaled
    return Rescaled(w, phi)(cond, uncond, 0, cond)


# -- notebook 08: the autoencoder of latent diffusion ---------------------------------------------
# -- notebook 08: the autoencoder of latent diffusion ---------------------------------------------
HINT_REPARAMETERISE = ("z = μ + exp(½·logvar)·ε: σ = exp(½·log σ²) is the square root of the variance — "
                       "exp(logvar) would be σ² itself. Use the noise you are given (do not draw your own, and "
                       "do not leave it out: z = μ is the mean, not a sample), and build z from mean and logvar "
                       "with torch operations so that gradients reach both (no .detach(), torch.no_grad or .item()).")

HINT_KL = ("KL = ½ Σ (μ² + σ² − 1 − log σ²) with σ² = exp(logvar) and log σ² = logvar itself: keep the ½, the sign "
           "is minus log σ², and it is σ² (exp(logvar)), not σ (exp(½·logvar)). *Sum* over every latent element of "
           "each image (C·H·W: .flatten(1).sum(dim=1)), not the mean, and not over the batch: return shape (B,).")


def check_reparameterise(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(mean, logvar, noise) -> z`` against ``nn.autoencoder.reparameterise`` with the same ε, and
    that gradients reach mean and logvar."""
    from ..nn.autoencoder import reparameterise
    settings = ([((1, 1, 1, 1), None, ""), ((5, 4, 2, 2), None, ""), ((2, 2, 3, 3), 2.0, " (logvar = 2: σ = e)")]
                if hidden else
                [((2, 4, 8, 8), None, ""), ((3, 4, 4, 4), None, ""), ((1, 2, 16, 16), None, ""),
                 ((2, 4, 4, 4), 0.0, " (logvar = 0: σ = 1, so z = μ + ε)"),
                 ((2, 3, 4, 4), -60.0, " (logvar = −60: σ ≈ 1e-13, so z ≈ μ)")])
    cases = []
    for seed, (shape, fixed, note) in enumerate(settings, start=100 if hidden else 0):
        g = torch.Generator().manual_seed(seed)
        mean, noise = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        logvar = torch.full(shape, fixed) if fixed is not None else 4 * torch.rand(shape, generator=g) - 3
        inputs = dict(mean=mean, logvar=logvar, noise=noise)
        cases.append(Case(describe(**inputs) + note, tuple(inputs.values())))

    def reference(mean: Tensor, logvar: Tensor, noise: Tensor) -> Tensor:
        return reparameterise(mean, logvar, noise)

    def with_gradients(mean: Tensor, logvar: Tensor, noise: Tensor) -> Any:
        """``fn``'s z; when its values are right, also that z.sum() has a gradient for mean and for logvar."""
        leaves = mean.clone().requires_grad_(True), logvar.clone().requires_grad_(True)
        z = fn(*leaves, noise)
        if not isinstance(z, Tensor) or compare_tensors(reference(mean, logvar, noise), z.detach(), 1e-5, 1e-4):
            return z.detach() if isinstance(z, Tensor) else z          # wrong values: ``check`` explains them
        missing = [name for name, leaf in zip(("mean", "logvar"), leaves) if _gradient(z, leaf) is None]
        if missing:
            raise ExerciseError(f"reparameterise gives the right values, but no gradient reaches "
                                f"{' or '.join(missing)}: z must be computed from them with torch operations, so "
                                f"that training can move the encoder's outputs.\n  Hint: {_first_hint('reparameterise')}"
                                f"{_advice('reparameterise')}", "reparameterise")
        return z.detach()
    checked = check("reparameterise", with_gradients, reparameterise, cases, _first_hint("reparameterise"),
                    hidden=hidden, learner=fn)
    return fn if checked is with_gradients else checked


def _gradient(z: Tensor, leaf: Tensor) -> Optional[Tensor]:
    """∂(Σ z)/∂leaf, or None when z does not depend on ``leaf`` through autograd."""
    if not z.requires_grad:
        return None
    return torch.autograd.grad(z.sum(), leaf, retain_graph=True, allow_unused=True)[0]


def check_kl_divergence(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(mean, logvar) -> (B,)``, the KL divergence to N(0, I) per image, against
    ``nn.autoencoder.kl_divergence``: zero at the standard normal, two closed-form values, random latents."""
    from ..nn.autoencoder import kl_divergence
    log4 = torch.log(torch.tensor(4.0)).item()
    settings = [((2, 4, 8, 8), 0.0, 0.0, " (μ = 0, σ² = 1: the standard normal itself, KL = 0)"),
                ((3, 2, 4, 4), 1.0, 0.0, " (μ = 1, σ² = 1: KL = ½·μ²·C·H·W = 16 per image)"),
                ((2, 1, 4, 4), 0.0, log4,
                 f" (μ = 0, σ² = 4: KL = ½·(4 − 1 − log 4)·16 = {8 * (3 - log4):.4g} per image)"),
                ((4, 4, 8, 8), None, None, ""), ((2, 8, 16, 16), None, None, "")]
    if hidden:
        settings = [((1, 1, 1, 1), 2.0, 0.0, " (μ = 2, σ² = 1: KL = 2)"), ((3, 4, 4, 4), None, None, ""),
                    ((2, 2, 2, 2), None, None, "")]
    cases = []
    for seed, (shape, mu, logvar, note) in enumerate(settings, start=100 if hidden else 0):
        g = torch.Generator().manual_seed(seed)
        mean = torch.full(shape, mu) if mu is not None else torch.randn(shape, generator=g)
        lv = torch.full(shape, logvar) if logvar is not None else 4 * torch.rand(shape, generator=g) - 3
        cases.append(Case(describe(mean=mean, logvar=lv) + note, (mean, lv)))
    return check("kl_divergence", fn, kl_divergence, cases, _first_hint("kl_divergence"), atol=1e-4, rtol=1e-4,
                 hidden=hidden)


# -- common mistakes, in the notebooks' words ------------------------------------------------------
# Each wrong function has the exercise's signature; ``_at`` indexes like a learner (t − 1 wraps around).
def _q_sample_with(abar: Callable, x0_coef: Callable = torch.sqrt,
                   noise_coef: Callable = lambda a: (1 - a).sqrt()) -> Callable:
    """q_sample with ᾱ_t read by ``abar(s, t, x0)`` and the two coefficients made from it."""
    def wrong(x0: Tensor, t: Any, s: schedules.NoiseSchedule, noise: Tensor) -> Tensor:
        a = abar(s, t, x0)
        return x0_coef(a) * x0 + noise_coef(a) * noise
    return wrong


_ABAR = lambda s, t, x: _at(s.alphas_cumprod, t, x)

Q_SAMPLE_MISTAKES = (
    Mistake("you used s.alphas[t] (α_t, one step) where the jump needs ᾱ_t = s.alphas_cumprod[t], the running "
            "product", _q_sample_with(lambda s, t, x: _at(s.alphas, t, x))),
    Mistake("the square roots are missing: the coefficients are √ᾱ_t and √(1 − ᾱ_t), not ᾱ_t and 1 − ᾱ_t",
            _q_sample_with(_ABAR, lambda a: a, lambda a: 1 - a)),
    Mistake("the noise term is missing: add √(1 − ᾱ_t)·noise", _q_sample_with(_ABAR, noise_coef=lambda a: 0 * a)),
    Mistake("x0's coefficient lacks its square root: it is √ᾱ_t", _q_sample_with(_ABAR, lambda a: a)),
    Mistake("the noise's coefficient lacks its square root: it is √(1 − ᾱ_t)",
            _q_sample_with(_ABAR, noise_coef=lambda a: 1 - a)),
    Mistake("you wrote 1 − √ᾱ_t for the noise's coefficient; it is √(1 − ᾱ_t)",
            _q_sample_with(_ABAR, noise_coef=lambda a: 1 - a.sqrt())),
    Mistake("the coefficients are swapped: x0 takes √ᾱ_t and the noise √(1 − ᾱ_t)",
            _q_sample_with(_ABAR, lambda a: (1 - a).sqrt(), lambda a: a.sqrt())),
    Mistake("you indexed at t − 1: t is 0-indexed, so ᾱ_t is s.alphas_cumprod[t] itself (at t = 0, t − 1 wraps "
            "around to the last step)", _q_sample_with(lambda s, t, x: _at(s.alphas_cumprod, t - 1, x))),
    Mistake("you indexed at t + 1: t is 0-indexed, so ᾱ_t is s.alphas_cumprod[t] itself",
            _q_sample_with(lambda s, t, x: _at(s.alphas_cumprod, t + 1, x))),
    Mistake("the coefficient was not shaped per image: s.alphas_cumprod[t] has shape (B,) and lines up with the "
            "images' columns; md.extract(s.alphas_cumprod, t, x0) gives it shape (B, 1, 1, 1)",
            _q_sample_with(lambda s, t, x: _flat(s.alphas_cumprod, t, x))),
)


def _q_step_with(alpha: Callable, beta: Callable, swap: bool = False, roots: bool = True) -> Callable:
    def wrong(x_prev: Tensor, t: Any, s: schedules.NoiseSchedule, noise: Tensor) -> Tensor:
        a, b = alpha(s, t, x_prev), beta(s, t, x_prev)
        a, b = (a.sqrt(), b.sqrt()) if roots else (a, b)
        return b * x_prev + a * noise if swap else a * x_prev + b * noise
    return wrong


_ALPHA, _BETA = (lambda s, t, x: _at(s.alphas, t, x)), (lambda s, t, x: _at(s.betas, t, x))

Q_STEP_MISTAKES = (
    Mistake("you used s.alphas_cumprod[t] (ᾱ_t, the whole way from x_0) where one step needs α_t = s.alphas[t]",
            _q_step_with(_ABAR, _BETA)),
    Mistake("you wrote the closed-form jump from x_0 (ᾱ_t and 1 − ᾱ_t); one step uses step t's own α_t and β_t",
            _q_step_with(_ABAR, lambda s, t, x: 1 - _at(s.alphas_cumprod, t, x))),
    Mistake("the square roots are missing: the coefficients are √α_t and √β_t", _q_step_with(_ALPHA, _BETA, roots=False)),
    Mistake("the coefficients are swapped: x_prev takes √α_t and the noise √β_t", _q_step_with(_ALPHA, _BETA, swap=True)),
    Mistake("you indexed at t − 1: t is 0-indexed, so step t's β is s.betas[t]",
            _q_step_with(lambda s, t, x: _at(s.alphas, t - 1, x), lambda s, t, x: _at(s.betas, t - 1, x))),
    Mistake("the coefficient was not shaped per image: s.betas[t] has shape (B,) and lines up with the images' "
            "columns; md.extract(s.betas, t, x_prev) gives it shape (B, 1, 1, 1)",
            _q_step_with(lambda s, t, x: _flat(s.alphas, t, x), lambda s, t, x: _flat(s.betas, t, x))),
)

ALPHAS_CUMPROD_MISTAKES = (
    Mistake("you added (a running sum, torch.cumsum); ᾱ is a running product, torch.cumprod",
            lambda betas: torch.cumsum(1 - betas, dim=0)),
    Mistake("you multiplied the β's themselves; ᾱ multiplies α = 1 − β", lambda betas: torch.cumprod(betas, dim=0)),
    Mistake("your product leaves out step t itself (that is alphas_cumprod_prev); ᾱ_t includes α_t, so ᾱ_0 = 1 − β_0",
            lambda betas: torch.cat([betas.new_ones(1), torch.cumprod(1 - betas, dim=0)[:-1]])),
    Mistake("you returned 1 − ᾱ", lambda betas: 1 - torch.cumprod(1 - betas, dim=0)),
)


def _posterior_with(abar_prev: Callable = lambda s, t, x: _at(s.alphas_cumprod_prev, t, x),
                    alpha: Callable = _ALPHA, swap: bool = False, root_prev: bool = True,
                    divide: bool = True) -> Callable:
    def wrong(x0: Tensor, x_t: Tensor, t: Any, s: schedules.NoiseSchedule) -> Tensor:
        abar, prev, beta, a = _ABAR(s, t, x0), abar_prev(s, t, x0), _BETA(s, t, x0), alpha(s, t, x0)
        denominator = (1 - abar) if divide else 1
        c0 = (prev.sqrt() if root_prev else prev) * beta / denominator
        ct = a.sqrt() * (1 - prev) / denominator
        return ct * x0 + c0 * x_t if swap else c0 * x0 + ct * x_t
    return wrong


POSTERIOR_MEAN_MISTAKES = (
    Mistake("the coefficients are swapped: x0 takes the one with β_t, x_t the one with √α_t", _posterior_with(swap=True)),
    Mistake("you used s.alphas_cumprod[t − 1] for ᾱ_{t−1}: at t = 0 it wraps around to the last step; "
            "s.alphas_cumprod_prev[t] is 1 there", _posterior_with(lambda s, t, x: _at(s.alphas_cumprod, t - 1, x))),
    Mistake("you used ᾱ_t = s.alphas_cumprod[t] where the formula needs ᾱ_{t−1} = s.alphas_cumprod_prev[t]",
            _posterior_with(_ABAR)),
    Mistake("x_t's coefficient has √ᾱ_t where it is √α_t = s.alphas[t].sqrt()", _posterior_with(alpha=_ABAR)),
    Mistake("x0's coefficient lacks the square root of ᾱ_{t−1}", _posterior_with(root_prev=False)),
    Mistake("the division by 1 − ᾱ_t is missing (both coefficients have it)", _posterior_with(divide=False)),
)


def _cosine_with(offset: Optional[float] = None, clip: bool = True, square: bool = True, ratio: bool = True,
                 use_arguments: bool = True) -> Callable:
    def wrong(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
        if not use_arguments:
            s, max_beta = 0.008, 0.999
        s = s if offset is None else offset
        u = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** (2 if square else 1)
        betas = 1 - f[1:] / f[:-1] if ratio else 1 - f[1:]
        return betas.clamp(max=max_beta) if clip else betas
    return wrong


COSINE_MISTAKES = (
    Mistake("the offset s is missing (the + s and the 1 + s)", _cosine_with(offset=0.0)),
    Mistake("β was not clipped to max_beta (.clamp(max=max_beta))", _cosine_with(clip=False)),
    Mistake("the cosine is not squared: ᾱ(u) = cos²(…)", _cosine_with(square=False)),
    Mistake("β_t = 1 − ᾱ((t+1)/T) leaves out the division: β_t = 1 − ᾱ((t+1)/T)/ᾱ(t/T)", _cosine_with(ratio=False)),
    Mistake("the arguments s and max_beta were ignored (their defaults used instead)", _cosine_with(use_arguments=False)),
)


def _embedding_with(sines_first: bool = False, over_dim: bool = False, positive: bool = False,
                    interleaved: bool = False) -> Callable:
    def wrong(t: Tensor, dim: int, max_period: int = 10000) -> Tensor:
        half = dim // 2
        exponent = torch.arange(half, dtype=torch.float32) / (dim if over_dim else half)
        freqs = torch.exp((1 if positive else -1) * math.log(max_period) * exponent)
        angles = t.float()[:, None] * freqs[None, :]
        parts = [angles.sin(), angles.cos()] if sines_first else [angles.cos(), angles.sin()]
        return torch.stack(parts, dim=2).flatten(1) if interleaved else torch.cat(parts, dim=1)
    return wrong


EMBEDDING_MISTAKES = (
    Mistake("the sines come first; the embedding puts the cosines first: torch.cat([cos, sin], dim=1)",
            _embedding_with(sines_first=True)),
    Mistake("the exponent divides by dim; it is i/h with h = dim/2", _embedding_with(over_dim=True)),
    Mistake("the exponent lacks its minus sign: ω_i = max_period^(−i/h) falls with i", _embedding_with(positive=True)),
    Mistake("cos and sin are interleaved; put all the cosines first, then all the sines",
            _embedding_with(interleaved=True)),
)


def _film_with(silu: str = "before", one_plus: bool = True, swap: bool = False) -> Callable:
    def wrong(h: Tensor, emb: Tensor, emb_layer: torch.nn.Linear) -> Tensor:
        out = emb_layer(F.silu(emb) if silu == "before" else emb)
        out = F.silu(out) if silu == "after" else out
        scale, shift = out.chunk(2, dim=1)
        scale, shift = (shift, scale) if swap else (scale, shift)
        return h * ((1 + scale) if one_plus else scale)[:, :, None, None] + shift[:, :, None, None]
    return wrong


INJECT_TIME_MISTAKES = (
    Mistake("the SiLU is missing: emb_layer(F.silu(emb))", _film_with(silu="none")),
    Mistake("the SiLU comes after emb_layer; it goes before it: emb_layer(F.silu(emb))", _film_with(silu="after")),
    Mistake("h·γ + β: the scale is 1 + γ, so that a zero layer leaves h unchanged", _film_with(one_plus=False)),
    Mistake("scale and shift are swapped: the first C columns are the scale γ", _film_with(swap=True)),
)


def _loss_with(sees_x0: bool = False, against_x0: bool = False, reduce: str = "mean", power: int = 2,
               abar: Callable = _ABAR) -> Callable:
    def wrong(model: Callable, x0: Tensor, t: Tensor, noise: Tensor, s: schedules.NoiseSchedule) -> Tensor:
        a = abar(s, t, x0)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        error = (model(x0 if sees_x0 else x_t, t) - (x0 if against_x0 else noise)).abs() ** power
        return error.mean() if reduce == "mean" else error.sum()
    return wrong


TRAINING_LOSS_MISTAKES = (
    Mistake("the model was given x0; it sees the noised x_t (and t)", _loss_with(sees_x0=True)),
    Mistake("the prediction was compared against x0, not against the noise it predicts", _loss_with(against_x0=True)),
    Mistake("the squared errors were summed; the loss is their mean over every pixel of the batch",
            _loss_with(reduce="sum")),
    Mistake("the errors are not squared (that is a mean absolute error)", _loss_with(power=1)),
    Mistake("x_t was made with s.alphas[t] (α_t) instead of ᾱ_t = s.alphas_cumprod[t] (md.q_sample does it right)",
            _loss_with(abar=_ALPHA)),
)


def _ddpm_with(noise_at_0: bool = False, no_noise: bool = False, divide_by: Callable = _ALPHA,
               eps_root: bool = True, sigma: Callable = lambda s, t, x: _at(s.betas, t, x).sqrt()) -> Callable:
    def wrong(x_t: Tensor, eps: Tensor, t: int, s: schedules.NoiseSchedule, noise: Tensor) -> Tensor:
        beta, one_minus = _BETA(s, t, x_t), 1 - _ABAR(s, t, x_t)
        mean = (x_t - beta / (one_minus.sqrt() if eps_root else one_minus) * eps) / divide_by(s, t, x_t).sqrt()
        if no_noise or (t == 0 and not noise_at_0):
            return mean
        return mean + sigma(s, t, x_t) * noise
    return wrong


DDPM_STEP_MISTAKES = (
    Mistake("noise was added at t = 0 too; the last step returns the mean alone (DDPM Algorithm 2)",
            _ddpm_with(noise_at_0=True)),
    Mistake("no noise was added: for t > 0 the step adds √β_t·noise to the mean", _ddpm_with(no_noise=True)),
    Mistake("the mean divides by √ᾱ_t; it divides by √α_t = s.alphas[t].sqrt()", _ddpm_with(divide_by=_ABAR)),
    Mistake("eps's coefficient is β_t/(1 − ᾱ_t); it is β_t/√(1 − ᾱ_t)", _ddpm_with(eps_root=False)),
    Mistake("the noise is scaled by β_t; it is scaled by √β_t", _ddpm_with(sigma=_BETA)),
    Mistake("the noise is scaled by the posterior's √β̃_t; this step uses √β_t",
            _ddpm_with(sigma=lambda s, t, x: _at(s.posterior_variance, t, x).sqrt())),
)


def _ddim_with(prev_at_minus_one: Optional[Callable] = None, table: str = "alphas_cumprod", use_eta: bool = True,
               add_noise: bool = True, minus_sigma2: bool = True) -> Callable:
    def wrong(x_t: Tensor, eps: Tensor, t: int, t_prev: int, s: schedules.NoiseSchedule, eta: float,
              noise: Tensor) -> Tensor:
        abar = getattr(s, table)
        abar_t = _at(abar, t, x_t)
        if t_prev >= 0:
            abar_prev = _at(abar, t_prev, x_t)
        else:
            abar_prev = torch.ones_like(abar_t) if prev_at_minus_one is None else prev_at_minus_one(abar, x_t)
        x0 = (x_t - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()
        sigma = (eta if use_eta else 0.0) * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).sqrt()
        rest = (1 - abar_prev - (sigma ** 2 if minus_sigma2 else 0)).clamp(min=0).sqrt()
        return abar_prev.sqrt() * x0 + rest * eps + (sigma * noise if add_noise else 0)
    return wrong


DDIM_STEP_MISTAKES = (
    Mistake("at t_prev = −1 you indexed s.alphas_cumprod[−1], the last step; ᾱ' = 1 there (the clean image)",
            _ddim_with(prev_at_minus_one=lambda abar, x: _at(abar, -1, x))),
    Mistake("at t_prev = −1 you used ᾱ_0; ᾱ' = 1 there (the clean image)",
            _ddim_with(prev_at_minus_one=lambda abar, x: _at(abar, 0, x))),
    Mistake("eta was ignored: σ = eta·√((1 − ᾱ')/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ')", _ddim_with(use_eta=False)),
    Mistake("the fresh-noise term σ·noise is missing", _ddim_with(add_noise=False)),
    Mistake("eps's coefficient lacks the − σ²: it is √(1 − ᾱ' − σ²)", _ddim_with(minus_sigma2=False)),
    Mistake("you used s.alphas (α) where DDIM uses ᾱ = s.alphas_cumprod", _ddim_with(table="alphas")),
)


def _guided_with(mix: Callable) -> Callable:
    def wrong(model: Callable, x_t: Tensor, t: Tensor, y: Tensor, null_label: int, w: float) -> Tensor:
        both = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null_label)]))
        return mix(*both.chunk(2), w)
    return wrong


GUIDED_PREDICTION_MISTAKES = (
    Mistake("you started from the conditional output; it is uncond + w·(cond − uncond), so that w = 0 gives the "
            "unconditional one", _guided_with(lambda c, u, w: c + w * (c - u))),
    Mistake("the halves are swapped: the first half of the output is the conditional one (y came first)",
            _guided_with(lambda c, u, w: c + w * (u - c))),
)


def _rescaled_with(spread: Callable = lambda x: x.flatten(1).std(dim=1).view(-1, *[1] * (x.ndim - 1)),
                   swap_phi: bool = False, inverted: bool = False, of_uncond: bool = False) -> Callable:
    def wrong(cond: Tensor, uncond: Tensor, w: float, phi: float) -> Tensor:
        guided = uncond + w * (cond - uncond)
        target = spread(uncond if of_uncond else cond)
        rescaled = guided * (spread(guided) / target if inverted else target / spread(guided))
        return (1 - phi) * rescaled + phi * guided if swap_phi else phi * rescaled + (1 - phi) * guided
    return wrong


RESCALED_MISTAKES = (
    Mistake("σ was taken over the whole batch (x.std()); it is each image's own standard deviation, "
            "x.flatten(1).std(dim=1) shaped (B, 1, 1, 1)", _rescaled_with(spread=lambda x: x.std())),
    Mistake("φ and 1 − φ are swapped: φ weights the rescaled output", _rescaled_with(swap_phi=True)),
    Mistake("the ratio is upside down: x_re = x_cfg·σ(cond)/σ(x_cfg)", _rescaled_with(inverted=True)),
    Mistake("you rescaled towards σ(uncond); it is σ(cond)", _rescaled_with(of_uncond=True)),
)

REPARAMETERISE_MISTAKES = (
    Mistake("you used exp(logvar) as σ, but exp(logvar) is the variance σ²; σ = exp(½·logvar)",
            lambda mean, logvar, noise: mean + torch.exp(logvar) * noise),
    Mistake("you used logvar itself as σ; σ = exp(½·logvar)", lambda mean, logvar, noise: mean + logvar * noise),
    Mistake("z = μ is the mean, not a sample: add σ·noise", lambda mean, logvar, noise: mean.clone()),
    Mistake("mean and noise are swapped: z = mean + σ·noise", lambda mean, logvar, noise: noise + torch.exp(0.5 * logvar) * mean),
)


def _kl_with(reduce: str = "sum", half: float = 0.5, log_sign: int = -1, variance: Callable = torch.exp,
             over_batch: bool = False) -> Callable:
    def wrong(mean: Tensor, logvar: Tensor) -> Tensor:
        per_element = half * (mean ** 2 + variance(logvar) - 1 + log_sign * logvar)
        per_image = per_element.flatten(1).sum(dim=1) if reduce == "sum" else per_element.flatten(1).mean(dim=1)
        return per_image.sum() if over_batch else per_image
    return wrong


KL_MISTAKES = (
    Mistake("you averaged over each image's latent elements (.mean); the KL sums them", _kl_with(reduce="mean")),
    Mistake("the ½ is missing", _kl_with(half=1.0)),
    Mistake("the sign of log σ² is wrong: it is − log σ² = − logvar", _kl_with(log_sign=+1)),
    Mistake("you used σ = exp(½·logvar) where the formula has σ² = exp(logvar)",
            _kl_with(variance=lambda logvar: torch.exp(0.5 * logvar))),
    Mistake("you summed over the batch too; return one value per image, shape (B,)", _kl_with(over_batch=True)),
)


# -- every exercise: hints, mistakes, minidiff's own version ---------------------------------------
def _nn_reference(name: str) -> Callable:
    from ..nn import autoencoder, blocks, embedding
    return {"timestep_embedding": embedding.timestep_embedding, "inject_time": blocks.film,
            "reparameterise": autoencoder.reparameterise, "kl_divergence": autoencoder.kl_divergence}[name]


EXERCISES: dict[str, Exercise] = {e.name: e for e in [
    Exercise("q_step", "q_step", diffusion.q_step, (
        "One forward step keeps most of the previous image and adds a little of the noise you are given; both "
        "amounts come from step t's own β_t (not a product over steps), as square roots so that variances add up.",
        HINT_Q_STEP,
        "beta_t = md.extract(s.betas, t, x_prev); then (1 − beta_t).sqrt() multiplies x_prev and beta_t.sqrt() "
        "multiplies noise."),
        Q_STEP_MISTAKES, ("minidiff.diffusion.q_step",), per_image_t=True),
    Exercise("alphas_cumprod", "alphas_cumprod", _reference_alphas_cumprod, (
        "ᾱ_t is the share of the clean image's variance left after steps 0 … t: each step keeps α = 1 − β of "
        "it, so ᾱ accumulates those factors — a running product, not a sum — including step t itself.",
        HINT_ALPHAS_CUMPROD,
        "One line: torch.cumprod over 1 − betas along dim 0; no loop, and keep betas' float64."),
        ALPHAS_CUMPROD_MISTAKES),
    Exercise("q_sample", "q_sample", diffusion.q_sample, (
        "Jump from x0 to step t in one go: scale x0 by the square root of the signal left after step t (the "
        "running product ᾱ_t, not one step's α_t) and the noise you are given by the square root of the rest.",
        HINT_Q_SAMPLE,
        "abar_t = md.extract(s.alphas_cumprod, t, x0); then abar_t.sqrt() multiplies x0 and (1 − abar_t).sqrt() "
        "multiplies noise."),
        Q_SAMPLE_MISTAKES, ("minidiff.diffusion.q_sample",), per_image_t=True),
    Exercise("posterior_mean", "posterior_mean", _reference_posterior_mean, (
        "Knowing both ends, the step back is a weighted mix of x0 and x_t: x0 weighted by the noise step t "
        "added (β_t), x_t by the signal step t kept (√α_t); both weights use ᾱ_{t−1}, the product up to the step "
        "before, which is 1 at t = 0.",
        HINT_POSTERIOR_MEAN,
        "abar_t = md.extract(s.alphas_cumprod, t, x0), abar_prev = md.extract(s.alphas_cumprod_prev, t, x0), "
        "beta_t and alpha_t likewise from s.betas and s.alphas; return (abar_prev.sqrt() * beta_t * x0 + "
        "alpha_t.sqrt() * (1 − abar_prev) * x_t) / (1 − abar_t)."),
        POSTERIOR_MEAN_MISTAKES, ("minidiff.diffusion.q_posterior",), per_image_t=True),
    Exercise("cosine_schedule", "cosine_betas", _reference_cosine_betas, (
        "Define ᾱ directly as a smooth curve falling from 1 to 0 (a squared cosine with a small offset s), "
        "sample it at T + 1 evenly spaced points, read each β_t off the ratio of neighbouring values, and clip "
        "β so the last step is not 1.",
        HINT_COSINE,
        "u = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps; f = torch.cos((u + s) / (1 + s) * "
        "math.pi / 2) ** 2; then 1 − f[1:] / f[:-1], clamped to max_beta."),
        COSINE_MISTAKES, ("minidiff.schedules.NoiseSchedule.cosine",)),
    Exercise("timestep_embedding", "timestep_embedding", _nn_reference("timestep_embedding"), (
        "Turn each integer t into dim numbers: the cosines and the sines of t times frequencies spaced "
        "geometrically from 1 down to 1/max_period, so that nearby t get similar vectors at every scale.",
        HINT_EMBEDDING,
        "half = dim // 2; freqs = torch.exp(−math.log(max_period) * torch.arange(half, dtype=torch.float32) / "
        "half); angles = t.float()[:, None] * freqs[None, :]; then cat the cosines and the sines along dim 1."),
        EMBEDDING_MISTAKES, ("minidiff.nn.embedding.timestep_embedding",)),
    Exercise("inject_time", "inject_time", _nn_reference("inject_time"), (
        "FiLM: a linear layer turns the SiLU-activated time embedding into a scale and a shift per channel; "
        "scale h around 1 (so a zero layer leaves h as it is) and add the shift.",
        HINT_INJECT_TIME,
        "scale, shift = emb_layer(F.silu(emb)).chunk(2, dim=1); index both with [:, :, None, None] and combine "
        "them with h as h·(1 + scale) + shift."),
        INJECT_TIME_MISTAKES, ("minidiff.nn.blocks.film",)),
    Exercise("training_loss", "training_loss", _reference_training_loss, (
        "Noise x0 to step t with the noise you are given, let the model look at the noised image and t, and "
        "score how well it recovers that noise with a mean squared error.",
        HINT_TRAINING_LOSS,
        "x_t = md.q_sample(x0, t, s, noise); then the mean of (model(x_t, t) − noise) squared."),
        TRAINING_LOSS_MISTAKES, ("minidiff.losses.diffusion_loss", "minidiff.losses.per_sample_loss"),
        per_image_t=True),
    Exercise("ddpm_step", "ddpm_step", _reference_ddpm_step, (
        "Take the model's predicted noise out of x_t to get the mean of x_{t−1}, then add fresh noise of step "
        "t's size — at every step but the last (t = 0), which returns the mean alone.",
        HINT_DDPM_STEP,
        "beta_t, alpha_t = md.extract(s.betas, t, x_t), md.extract(s.alphas, t, x_t); mean = (x_t − beta_t / "
        "md.extract(s.sqrt_one_minus_alphas_cumprod, t, x_t) * eps) / alpha_t.sqrt(); at t == 0 return mean, "
        "else mean + beta_t.sqrt() * noise."),
        DDPM_STEP_MISTAKES, ("minidiff.samplers.ddpm_step",)),
    Exercise("ddim_step", "ddim_step", _reference_ddim_step, (
        "Predict the clean image x̂_0 from x_t and eps, then re-noise it to level t_prev: part of the rest is the "
        "predicted noise, part (σ, set by eta) fresh noise. t_prev = −1 means the clean image itself.",
        HINT_DDIM_STEP,
        "abar_t = md.extract(s.alphas_cumprod, t, x_t); abar_prev likewise at t_prev, or torch.ones_like(abar_t) "
        "when t_prev < 0; x0_hat = (x_t − (1 − abar_t).sqrt() * eps) / abar_t.sqrt(); sigma from eta; return "
        "abar_prev.sqrt() * x0_hat + (1 − abar_prev − sigma**2).clamp(min=0).sqrt() * eps + sigma * noise."),
        DDIM_STEP_MISTAKES, ("minidiff.samplers.ddim_step",)),
    Exercise("guided_prediction", "guided_prediction", _reference_guided_prediction, (
        "Run the model once on a batch holding every image twice — with its label and with the null label — "
        "split the output into its conditional and unconditional halves, and move from the unconditional one "
        "w times the difference.",
        HINT_GUIDED_PREDICTION,
        "null = torch.full_like(y, null_label); cond, uncond = model(torch.cat([x_t, x_t]), torch.cat([t, t]), "
        "torch.cat([y, null])).chunk(2); return uncond + w * (cond − uncond)."),
        GUIDED_PREDICTION_MISTAKES, ("minidiff.guidance.guided_output",)),
    Exercise("drop_labels", "drop_labels", _reference_drop_labels, (
        "Each label, on its own, becomes the null label with probability p_uncond; the others stay as they are, "
        "in a new tensor.",
        HINT_DROP_LABELS,
        "drop = torch.rand(y.shape, device=y.device) < p_uncond; then torch.where(drop, "
        "torch.full_like(y, null_label), y)."),
        (), ("minidiff.guidance.drop_labels",)),
    Exercise("rescaled_guidance", "rescaled_guidance", _reference_rescaled_guidance, (
        "Plain guidance spreads each image's values too wide: rescale each guided image to the spread of its "
        "conditional output, then blend the rescaled and the plain result with phi.",
        HINT_RESCALED,
        "guided = uncond + w * (cond − uncond); std = lambda x: x.flatten(1).std(dim=1).view(-1, *[1] * "
        "(x.ndim − 1)); rescaled = guided * std(cond) / std(guided); return phi * rescaled + (1 − phi) * guided."),
        RESCALED_MISTAKES, ("minidiff.guidance.Rescaled",)),
    Exercise("reparameterise", "reparameterise", _nn_reference("reparameterise"), (
        "A sample of N(μ, σ²) is μ plus σ times standard noise; the encoder gives log σ², so get σ from it — with "
        "torch operations on mean and logvar, so that gradients reach both.",
        HINT_REPARAMETERISE,
        "σ = torch.exp(0.5 * logvar); return mean + σ * noise."),
        REPARAMETERISE_MISTAKES, ("minidiff.nn.autoencoder.reparameterise",)),
    Exercise("kl_divergence", "kl_divergence", _nn_reference("kl_divergence"), (
        "The KL divergence of N(μ, σ²) from N(0, 1) has a closed form per latent element, zero at μ = 0, σ² = 1; "
        "add it up over each image's elements, one value per image.",
        HINT_KL,
        "0.5 * (mean ** 2 + logvar.exp() − 1 − logvar), then .flatten(1).sum(dim=1)."),
        KL_MISTAKES, ("minidiff.nn.autoencoder.kl_divergence",)),
]}
