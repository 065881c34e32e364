r"""The machinery every exercise check shares: cases, comparison, feedback, hints, the registry.

A check (``check`` for deterministic functions, ``check_properties`` for random ones) runs the
learner's function and minidiff's reference on fixed cases and returns the function later cells
should use; see the package docstring for what the learner sees. Each notebook's module
(``nb01_forward_process`` … ``nb08_latent_diffusion``) defines its checks, hints and common mistakes
and adds its exercises to ``EXERCISES`` with ``register``.
"""
from __future__ import annotations

import copy
import importlib
import os
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
from torch import Tensor

# Plain submodule imports: neither imports this module, so minidiff/__init__ may import us anywhere.
from ... import schedules


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

    ``batch_labels`` says what each image of the batch is (e.g. "t = 999, step 1000"), for positions in words."""
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
    more = f" (mc.exercises.hint({name!r}, {level + 1}) says more.)" if level < len(exercise.hints) else ""
    print(f"{name}, hint {level} of {len(exercise.hints)}: {text}{more}")
    return text


def use_reference(name: str) -> Callable:
    """minidiff's implementation of exercise ``name``, to run the rest of the notebook before finishing it:
    ``q_sample = mc.exercises.use_reference("q_sample")``. (Graded checks do not accept it.)"""
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
    return (f"\n  mc.exercises.hint({name!r}, 2) shows the formula."
            f"\n  To run the rest of the notebook first, put `raise NotImplementedError` back as the body of "
            f"{exercise.function}, or use minidiff's version for now:"
            f"\n      {exercise.function} = mc.exercises.use_reference({name!r})")


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
               if m is not None and (key == "minidiff" or key.startswith("minidiff.")) and not key.startswith(__package__)]
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
    return _returned(fn, hidden)


def _print_success(name: str, count: int, hidden: bool, visible: str) -> None:
    print(f"✓ {name}: hidden tests pass ({count} more cases)." if hidden else f"✓ {name}: {visible.format(count)}.")


def _refuse_the_reference_when_grading(name: str, learner: Callable, hidden: bool) -> None:
    """Graded (hidden tests, or nbgrader): minidiff's own function stands for no work, so it scores 0."""
    if name in EXERCISES and _is_minidiffs(learner) and (hidden or os.environ.get("NBGRADER_EXECUTION")):
        raise ExerciseError(f"{name}: the function checked is minidiff's own (mc.exercises.use_reference, or the "
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
    return _returned(fn, hidden)


def _returned(fn: Callable, hidden: bool) -> Optional[Callable]:
    """What a passing check returns: the function for later cells, or None for the hidden tests, whose call ends
    a graded cell (nbgrader would read a returned function, shown as the cell's output, as a partial score)."""
    return None if hidden else fn


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
    """An index in the learner's terms: ``image 2 (t = 999, step 1000), channel 0, row 3, column 5`` for an
    image batch; ``entry 1 (t = 10), image 0, channel 0, …`` for a stack of batches (``labels`` then name the
    entries); ``index (9,)`` otherwise."""
    if len(at) == 5:
        label = f" ({labels[at[0]]})" if at[0] < len(labels) else ""
        return f"entry {at[0]}{label}, " + position(at[1:])
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
    """``("t = 0, step 1", "t = 999, step 1000")``: what each image of a batch is, for positions in words
    (``t`` holds positions; position t is step t + 1)."""
    values = t.tolist() if isinstance(t, Tensor) and t.ndim else [int(t)] * batch
    return tuple(f"t = {v}, step {v + 1}" for v in values)


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


def _first_hint(name: str) -> str:
    return EXERCISES[name].hints[0]


# How a learner indexes the schedule's tables, for the common mistakes (``_at``: t − 1 wraps around).
_ABAR = lambda s, t, x: _at(s.alphas_cumprod, t, x)
_ALPHA, _BETA = (lambda s, t, x: _at(s.alphas, t, x)), (lambda s, t, x: _at(s.betas, t, x))


# -- the registry: each notebook's module adds its exercises -----------------------------------
EXERCISES: dict[str, Exercise] = {}


def register(*exercises: Exercise) -> None:
    """Add exercises to ``EXERCISES`` (their hints, mistakes and minidiff's version), once each."""
    for exercise in exercises:
        if exercise.name in EXERCISES:
            raise ValueError(f"exercise names must be unique; {exercise.name!r} is registered twice")
        EXERCISES[exercise.name] = exercise
