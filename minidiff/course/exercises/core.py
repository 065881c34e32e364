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
import inspect
import os
import random
import secrets
import signal
import sys
import threading
import types
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
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
    implemented_by: tuple[str, ...] = ()        # minidiff's own answer: a call into it, at any depth, is refused
    per_image_t: bool = False                   # takes a batch of t: shape errors point to md.extract
    depends_on: tuple[str, ...] = ()            # earlier exercises it calls: graded with their references
    changes_inputs: bool = False                # updates an argument in place by design (ema_update)
    # (exception, the case's arguments) -> the common mistake a crash points to, or None (e.g. forward_chain's
    # KeyError for a step count: the off-by-one between steps and positions)
    error_advice: Optional[Callable[[Exception, tuple], Optional[str]]] = None


# -- hints, the reference, failures remembered ---------------------------------------------------
class PrintedHint(str):
    """A hint's text, already printed: as a notebook cell's last value it shows nothing more (IPython calls
    ``_ipython_display_`` instead of showing the string a second time)."""

    def _ipython_display_(self) -> None:
        pass


def hint(name: str, level: int = 1) -> str:
    """Print and return hint ``level`` for exercise ``name``: 1 the idea, 2 the formula, 3 nearly the code.
    The text returned (a ``PrintedHint``) is not shown again as the cell's value."""
    exercise = _exercise(name)
    levels = range(1, len(exercise.hints) + 1)
    if isinstance(level, bool) or level not in levels:
        raise ValueError(f"level must be one of {list(levels)} (1: the idea, 2: the formula, 3: nearly the code); "
                         f"got {level!r}")
    text = exercise.hints[level - 1]
    more = f" (mc.exercises.hint({name!r}, {level + 1}) says more.)" if level < len(exercise.hints) else ""
    print(f"{name}, hint {level} of {len(exercise.hints)}: {text}{more}")
    return PrintedHint(text)


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


# -- keeping minidiff's own answer out of reach, without touching any module ----------------------
# While the learner's function runs, a profile hook (sys.setprofile) watches every Python call it makes,
# at any depth and by any route (an alias, a default argument bound at definition, EXERCISES[name].reference,
# a schedule built only to read its ᾱ): a call into a function that computes the exercise's answer ends the
# run with a refusal naming it. Nothing is replaced, so nothing needs restoring. A per-case time limit
# (SIGALRM, in the main thread) ends a function that never returns.
TIME_LIMIT_S = 60.0             # per case: far beyond any right answer on the checks' small inputs


class _Stop(BaseException):
    """Raised inside the learner's code to end its run: a refusal or the time limit. A BaseException, so that
    ``except Exception`` in the learner's code does not swallow it (and a swallowed one is remembered anyway)."""


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
    parts, top = path.split(".")[1:], importlib.import_module("minidiff")
    for start in range(len(parts) - 1, 0, -1):      # the shortest tail that md itself reaches
        found = top
        for attr in parts[start:]:
            found = getattr(found, attr, None)
        if found is obj or (found is not None and found == obj):    # == for classmethods, bound anew each time
            return "md." + ".".join(parts[start:])
    return "md." + ".".join(parts)


def _codes(obj: Any) -> list[types.CodeType]:
    """The code objects that run when ``obj`` is called: a function's, a classmethod's, or every method of a class."""
    if isinstance(obj, (classmethod, staticmethod)):
        obj = obj.__func__
    if isinstance(obj, property):
        return [c for f in (obj.fget, obj.fset) if f is not None for c in _codes(f)]
    if isinstance(obj, type):
        return [c for value in vars(obj).values() for c in _codes(value)]
    function = getattr(obj, "__func__", obj)
    if callable(function):
        function = inspect.unwrap(function)         # past torch.no_grad()'s and functools.wraps' wrappers
    code = getattr(function, "__code__", None)
    return [code] if isinstance(code, types.CodeType) and code.co_filename.startswith(_PACKAGE_DIR) else []


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # minidiff/


def _key(code: types.CodeType) -> tuple[str, str, int]:
    """A code object's identity that a fresh copy of the same source shares (see grading's fresh checks)."""
    return code.co_name, code.co_filename, code.co_firstlineno


def forbidden(name: str) -> dict[tuple[str, str, int], str]:
    """What counts as minidiff's own answer to exercise ``name``: each function its ``implemented_by`` names
    (a class: all its methods) and the checks' reference, keyed by code, with the name the feedback gives it."""
    exercise = EXERCISES.get(name)
    if exercise is None:
        return {}
    found: dict[tuple[str, str, int], str] = {}
    for path in exercise.implemented_by:
        owner, attr, obj = _resolve(path)
        label = "minidiff's own " + _public_name(path, obj)
        for code in _codes(owner.__dict__[attr] if isinstance(owner, type) else obj):
            found.setdefault(_key(code), label)
    for code in _codes(exercise.reference):
        found.setdefault(_key(code), f"the checks' own answer (mc.exercises.EXERCISES[{name!r}].reference)")
    return found


_HERE = globals()
_SWITCHES = (sys.setprofile, sys.settrace, threading.setprofile, threading.settrace)


@contextmanager
def _guarded(name: str, refused: dict[tuple[str, str, int], str], learner: Optional[Callable] = None,
             time_limit: Optional[float] = None) -> Iterator[list]:
    """Run the block with the watch on; the yielded list receives what ended it ("calls …", "time").
    A call into ``refused`` counts when the learner's own code is below it on the stack (a check's wrapper
    around the learner may use the reference itself). The caller turns ``stops`` into feedback
    (``_stopped``) after the block, whatever the learner's code caught."""
    stops: list[str] = []
    by_name: dict[str, list[tuple[str, int, str]]] = {}
    for (co_name, filename, line), label in refused.items():
        by_name.setdefault(co_name, []).append((filename, line, label))

    def watch(frame: types.FrameType, event: str, arg: Any) -> None:
        if event == "call":
            code = frame.f_code
            for filename, line, label in by_name.get(code.co_name, ()):
                if code.co_firstlineno == line and code.co_filename == filename and _below(frame, learner_code):
                    stops.append("calls " + label)
                    raise _Stop()
        elif event == "c_call" and arg in _SWITCHES and frame.f_globals is not _HERE:   # not the watch's own reset
            stops.append("switches off the check's watch on its calls (sys.setprofile / sys.settrace)")
            raise _Stop()

    def alarm(signum: int, frame: Any) -> None:
        stops.append("time")
        raise _Stop()

    learner_code = getattr(learner, "__code__", None)
    limit = TIME_LIMIT_S if time_limit is None else time_limit
    timed = limit > 0 and hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    previous_profile = sys.getprofile()
    if timed:
        previous_handler = signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, limit, 1.0)    # fires again each second if the learner catches it
    sys.setprofile(watch)
    try:
        yield stops
    except _Stop:
        pass
    finally:
        sys.setprofile(previous_profile)
        if timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous_handler)


def _below(frame: types.FrameType, code: Optional[types.CodeType]) -> bool:
    """Whether a frame running ``code`` called ``frame``, at any depth (any frame at all when ``code`` is None)."""
    if code is None:
        return True
    caller = frame.f_back
    while caller is not None:
        if caller.f_code is code:
            return True
        caller = caller.f_back
    return False


def _stopped(name: str, stops: Sequence[str], where: str) -> Optional[ExerciseError]:
    """The feedback for a run the watch ended, or None when it ran to its end by itself."""
    if not stops:
        return None
    if stops[0] == "time":
        return ExerciseError(f"{name}: your function did not return within {TIME_LIMIT_S:g} s on {where} (an endless "
                             f"loop, or far more work than the case needs)" + _advice(name), name)
    if stops[0].startswith("switches off"):
        return ExerciseError(f"{name} {stops[0]}, which a check cannot allow: this check scores 0", name)
    return ExerciseError(f"{name} {stops[0]}: this exercise asks you to write it yourself, not to call minidiff's "
                         f"version (helpers such as md.extract are fine)." + _advice(name), name)


def _escaped(name: str, exc: BaseException, where: str) -> ExerciseError:
    """A SystemExit, KeyboardInterrupt or the like from the learner's function, as a check failure."""
    what = {SystemExit: "called sys.exit (or raised SystemExit)",
            KeyboardInterrupt: "was interrupted (KeyboardInterrupt)"}
    said = next((v for k, v in what.items() if isinstance(exc, k)), f"raised {type(exc).__name__}")
    return ExerciseError(f"{name} {said} on {where}: {type(exc).__name__}({', '.join(map(repr, exc.args))}). "
                         f"A function must return its answer; the check cannot go on from there." + _advice(name), name)


def _changed_inputs(fn: Callable, case: Case, args: tuple, kwargs: dict) -> list[str]:
    """The names of the case's tensors that ``fn`` overwrote in place (``args``/``kwargs``: the copies it got)."""
    try:
        names = list(inspect.signature(fn).bind(*args, **kwargs).arguments)
    except (TypeError, ValueError):
        names = []
    names += [f"argument {i + 1}" for i in range(len(names), len(args))]
    changed = []
    given, got = (*case.args, *case.kwargs.values()), (*args, *kwargs.values())
    for label, before, after in zip(names + list(kwargs), given, got):
        if not _same(before, after):
            changed.append(label)
    return changed


def _same(before: Any, after: Any) -> bool:
    """Whether the tensors inside ``after`` (a copy of ``before`` the function got) still hold ``before``'s values."""
    if isinstance(before, Tensor):
        return isinstance(after, Tensor) and before.shape == after.shape and bool(
            torch.equal(before.nan_to_num(), after.detach().nan_to_num()))
    if isinstance(before, (list, tuple)) and isinstance(after, (list, tuple)) and len(before) == len(after):
        return all(_same(b, a) for b, a in zip(before, after))
    if isinstance(before, dict) and isinstance(after, dict):
        return all(_same(b, after.get(k)) for k, b in before.items())
    if isinstance(before, schedules.NoiseSchedule):
        return all(_same(v, getattr(after, k, None)) for k, v in vars(before).items() if isinstance(v, Tensor))
    if isinstance(before, torch.nn.Module) and isinstance(after, torch.nn.Module):
        return _same(dict(before.state_dict()), dict(after.state_dict()))
    return True


# -- the generic core ---------------------------------------------------------------------------
def check(name: str, fn: Callable, reference: Callable, cases: Sequence[Case], hint: str,
          atol: float = 1e-5, rtol: float = 1e-4, output_names: Sequence[str] = (), *,
          hidden: bool = False, learner: Optional[Callable] = None) -> Callable:
    """Compare ``fn`` with ``reference`` on every case; return the function later cells should use.

    ``output_names`` names the elements when the reference returns a tuple (e.g. "mean", "variance").
    ``hidden``: the cases are the grader's hidden ones, so a skipped exercise fails. ``learner`` is the
    learner's own function when ``fn`` wraps it (its globals are searched for minidiff's version).
    When ``name`` is in ``EXERCISES``, common mistakes are recognised, a call into minidiff's own answer is refused
    (``forbidden``), and earlier exercises the function calls run as minidiff's references (``depends_on``).
    """
    if not callable(fn):
        raise TypeError(f"{name}: the check expects your function; got {type(fn).__name__}")
    if not cases:
        raise ValueError(f"{name}: cases must hold at least one Case; got none")
    learner = fn if learner is None else learner
    try:
        _refuse_the_reference_when_grading(name, learner, hidden)
        refused = {} if _is_minidiffs(learner) else forbidden(name)
        graded, swapped = _with_reference_dependencies(name, fn) if learner is fn else (fn, {})
        # A learner's stray torch.randn must not shift the random numbers of the notebook's later cells.
        with torch.random.fork_rng(devices=[]):
            expected = [_call(reference, case) for case in cases]
            outputs: list[Any] = []                                     # the learner's, case by case
            for i, (case, want) in enumerate(zip(cases, expected), start=1):
                where = f"case {i} of {len(cases)}: {case.description}"
                try:
                    got = _run(name, graded, case, where, refused, learner if learner is not fn else graded)
                except NotImplementedError as exc:
                    return not_attempted(name, reference, exc, hidden)
                except ExerciseError:                            # a check inside the case said what is wrong
                    raise
                except Exception as exc:
                    raise ExerciseError(f"{name} raised an error on {where}\n  {type(exc).__name__}: {exc}"
                                        f"{_error_advice(name, exc, case)}{_shape_advice(name, exc)}"
                                        f"{_graded_with(swapped)}\n  Hint: {hint}{_advice(name)}", name) from exc
                outputs.append(got)
                problem = compare(expected=want, got=got, atol=atol, rtol=rtol, output_names=output_names,
                                  labels=case.batch_labels)
                if problem is not None:
                    outputs += [_output_or_none(name, graded, later, refused, learner if learner is not fn else graded)
                                for later in cases[i:]]
                    raise ExerciseError(f"{name} is not right yet, on {where}\n  {problem}"
                                        f"{_recognise(name, cases, outputs, i - 1, atol, rtol, output_names)}"
                                        f"{_shape_advice(name, problem)}{_graded_with(swapped)}\n  Hint: {hint}"
                                        f"{_advice(name)}", name)
            own = _own_dependencies_note(name, fn, swapped, cases, expected, refused, atol, rtol, output_names)
    except ExerciseError as error:
        raise _failed(name, error)
    _passed(name)
    _print_success(name, len(cases), hidden, "correct on {} test cases")
    if own:
        print(own)
    return _returned(fn, hidden)


# -- grading each exercise on its own -------------------------------------------------------------
def _names_used(code: types.CodeType) -> set[str]:
    """The global names a function's code (and the code nested in it) reads."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names_used(const)
    return names


def _with_reference_dependencies(name: str, fn: Callable) -> tuple[Callable, dict[str, str]]:
    """``fn`` as the check runs it: where it calls an earlier exercise by its notebook name (forward_chain's
    ``q_step``), a copy of ``fn`` whose globals hold minidiff's reference for it instead, so that an earlier
    exercise's mistake does not count against this one. The learner's namespace is not touched. Also returns
    {notebook name: exercise} for what was swapped."""
    exercise, scope, code = EXERCISES.get(name), getattr(fn, "__globals__", None), getattr(fn, "__code__", None)
    if exercise is None or scope is None or code is None or _is_minidiffs(fn):
        return fn, {}
    used = _names_used(code)
    swaps = {EXERCISES[d].function: d for d in exercise.depends_on
             if EXERCISES[d].function in used and scope.get(EXERCISES[d].function) is not EXERCISES[d].reference}
    if not swaps:
        return fn, {}
    scope = {**scope, **{function: EXERCISES[d].reference for function, d in swaps.items()}}
    graded = types.FunctionType(code, scope, fn.__name__, fn.__defaults__, fn.__closure__)
    graded.__kwdefaults__ = getattr(fn, "__kwdefaults__", None)
    return graded, swaps


def _graded_with(swapped: dict[str, str]) -> str:
    if not swapped:
        return ""
    names = " and ".join(swapped)
    return (f"\n  (This check runs it with minidiff's {names}, not yours, so the error is in this exercise's own "
            f"code.)")


def _own_dependencies_note(name: str, fn: Callable, swapped: dict[str, str], cases: Sequence[Case],
                           expected: Sequence[Any], refused: dict, atol: float, rtol: float,
                           output_names: Sequence[str]) -> str:
    """After a pass with minidiff's versions of the earlier exercises: whether the learner's own versions give
    the same answers, and a note naming the earlier exercise when they do not."""
    if not swapped:
        return ""
    for i, (case, want) in enumerate(zip(cases, expected), start=1):
        got = _output_or_none(name, fn, case, refused)
        if got is None or compare(want, got, atol, rtol, output_names) is not None:
            names = " and ".join(swapped)
            return (f"  Graded on its own, with minidiff's {names}. With your own {names} it does not give these "
                    f"answers (case {i} differs): {names} above is not right yet, and {name} inherits its error.")
    return ""


def _print_success(name: str, count: int, hidden: bool, visible: str) -> None:
    print(f"✓ {name}: hidden tests pass ({count} more cases)." if hidden else f"✓ {name}: {visible.format(count)}.")


def _refuse_the_reference_when_grading(name: str, learner: Callable, hidden: bool) -> None:
    """Graded (hidden tests, or nbgrader): minidiff's own function stands for no work, so it scores 0."""
    if name in EXERCISES and _is_minidiffs(learner) and (hidden or os.environ.get("NBGRADER_EXECUTION")):
        raise ExerciseError(f"{name}: the function checked is minidiff's own (mc.exercises.use_reference, or the "
                            f"stand-in for an exercise not attempted), not yours, so this check scores 0", name)


def _output_or_none(name: str, fn: Callable, case: Case, refused: Optional[dict] = None,
                    learner: Optional[Callable] = None) -> Any:
    """``fn`` on ``case``, or None where it raises or is stopped (quietly, and without moving the RNG)."""
    try:
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
            warnings.simplefilter("ignore")
            return _run(name, fn, case, "", refused, learner) if refused is not None else _call(fn, case)
    except Exception:
        return None


def _run(name: str, fn: Callable, case: Case, where: str, refused: dict, learner: Optional[Callable] = None,
         inputs_checked: bool = True) -> Any:
    """``fn`` on a private copy of ``case``'s inputs, watched (``_guarded``): a refusal, the time limit, an
    escape such as sys.exit, or an input overwritten in place becomes an ExerciseError saying so; the
    learner's own exceptions pass through unchanged for the caller to report."""
    args, kwargs = copy.deepcopy((case.args, case.kwargs)) if inputs_checked else (case.args, case.kwargs)
    result, error = None, None
    with _guarded(name, refused, fn if learner is None else learner) as stops:
        try:
            result = fn(*args, **kwargs)
        except _Stop:
            raise
        except Exception as exc:
            error = exc
        except BaseException as exc:                # SystemExit, KeyboardInterrupt, GeneratorExit
            error = _escaped(name, exc, where)
    stop = _stopped(name, stops, where)
    if stop is not None:
        raise stop
    if error is not None:
        raise error
    exercise = EXERCISES.get(name)
    unchecked = not inputs_checked or (exercise is not None and exercise.changes_inputs)
    changed = [] if unchecked else _changed_inputs(fn, case, args, kwargs)
    if changed:
        raise ExerciseError(f"{name} overwrote its input {' and '.join(changed)} in place on {where}. The caller's "
                            f"tensors must stay as they were: compute a new tensor (x * a) instead of changing the "
                            f"input (x.mul_(a), x *= a, x[...] = ...)." + _advice(name), name)
    return result


def _recognise(name: str, cases: Sequence[Case], outputs: Sequence[Any], failing: int, atol: float, rtol: float,
               output_names: Sequence[str]) -> str:
    """A line naming the common mistake that explains the learner's ``outputs``, or "". A mistake must match on
    the failing case and on every other case where both ran: one case alone can be too close to call (at
    t = 0, ᾱ_t ≈ 1 and many formulas nearly agree)."""
    exercise = EXERCISES.get(name)
    for mistake in exercise.mistakes if exercise is not None else ():
        wrong = [_output_or_none(name, mistake.wrong, case) for case in cases]
        if wrong[failing] is None:                  # this mistake cannot even run on the case: not it
            continue
        if all(w is None or got is None or compare(w, got, atol, rtol, output_names) is None
               for w, got in zip(wrong, outputs)):
            return f"\n  This looks like a common mistake: {mistake.description}."
    return ""


def _error_advice(name: str, exc: Exception, case: Case) -> str:
    """The common mistake an exercise's crash points to (``Exercise.error_advice``), as a line of feedback."""
    exercise = EXERCISES.get(name)
    mistake = exercise.error_advice(exc, case.args) if exercise is not None and exercise.error_advice else None
    return f"\n  This looks like a common mistake: {mistake}." if mistake else ""


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
        refused = {} if _is_minidiffs(fn) else forbidden(name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            for i, (description, test) in enumerate(properties, start=1):
                where = f"check {i} of {len(properties)}: {description}"
                try:
                    problem = test(_watched(name, fn, where, refused))
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


def _watched(name: str, fn: Callable, where: str, refused: dict) -> Callable:
    """``fn`` for a property to call: each call watched as ``_run`` watches a case (on the inputs it is given)."""
    def watched(*args: Any, **kwargs: Any) -> Any:
        return _run(name, fn, Case(where, args, kwargs), where, refused, inputs_checked=False)   # the properties say
    return watched


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
    if isinstance(value, torch.nn.Module):   # a check's stand-in says what it is; its class name is internal
        return f"{name}={getattr(value, 'description', None) or 'a small ' + type(value).__name__.lstrip('_')}"
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


# -- the hidden cases: drawn from the grader's seed, never stored in the package ----------------------------
# The visible cases are fixed: the notebook prints them. The hidden ones are drawn: each notebook's module says
# what they must cover (an edge t, B = W, the shortest schedule…) as a function of a ``random.Random``, and
# ``hidden_rng`` seeds it from a secret in the nbgrader course directory, which `make assignments` writes and no
# release holds. A learner has the recipe, not the cases: a check run with ``hidden=True`` outside the course draws
# new ones each time.
SEED_FILE = "hidden_cases.seed"             # in the course directory, beside nbgrader_config.py
SEED_VARIABLE = "MINIDIFF_HIDDEN_SEED"      # outside a course: a fixed draw (the tests use it)


def hidden_seed() -> str:
    """The secret the hidden cases are drawn from: the course's ``SEED_FILE`` in the working directory or above it
    (nbgrader runs a submission in course/submitted/STUDENT/ASSIGNMENT/; the outermost file counts, so one handed
    in beside a submission does not), else ``$MINIDIFF_HIDDEN_SEED``, else a fresh random one on each call."""
    here = Path.cwd()
    found = [folder / SEED_FILE for folder in (here, *here.parents) if (folder / SEED_FILE).is_file()]
    if found:
        return found[-1].read_text(encoding="utf-8").strip()
    return os.environ.get(SEED_VARIABLE) or secrets.token_hex(16)


def hidden_rng(key: str) -> random.Random:
    """The generator the hidden cases of ``key`` (one key per case builder) are drawn from: the same draw for the
    same seed, on any machine (a ``str`` seed goes through SHA-512, not Python's salted hash)."""
    return random.Random(f"{hidden_seed()}/{key}")


def torch_seed(rng: random.Random) -> int:
    """A seed for torch's generators, drawn from ``rng`` (the first of a builder's consecutive seeds)."""
    return rng.randrange(2 ** 40)


# -- inputs shared by the image exercises --------------------------------------------------------
# (image shape, t, schedule): an int t and batches of t, the edges t = 0 and t = T−1, unsorted t.
_IMAGE_CASES = [
    ((2, 1, 4, 4), 0, ("linear", 1000)),
    ((3, 1, 8, 8), [0, 10, 999], ("linear", 1000)),
    ((4, 1, 28, 28), [0, 10, 500, 999], ("cosine", 1000)),
    ((2, 3, 6, 6), 999, ("cosine", 1000)),
    ((5, 2, 4, 4), [49, 0, 25, 1, 48], ("sigmoid", 50)),
]

# Float32 images: a learner may cast the float64 tables to float32 before the arithmetic, and 1 − ᾱ_t
# then loses up to ~1e-3 of its relative precision near t = 0 (ᾱ_0 ≈ 1), so allow for that.
IMAGE_TOLERANCE = {"atol": 2e-4, "rtol": 2e-3}


def _hidden_image_settings(rng: random.Random) -> list[tuple]:
    """Four drawn (image shape, t, schedule): a batch with B = W (a coefficient of shape (B,) then broadcasts
    silently over the columns instead of failing) holding both ends of T = 1000, a single image near the end,
    every position of a short schedule in reverse, and the shortest schedule (T = 2) with an int t."""
    kind = lambda: rng.choice(("linear", "cosine", "sigmoid"))
    b, short = rng.randint(3, 6), rng.randint(4, 8)
    ends = [0, 999, *rng.sample(range(1, 999), b - 2)]
    rng.shuffle(ends)
    return [((b, 1, rng.randint(2, 6), b), ends, (kind(), 1000)),
            ((1, 3, rng.randint(3, 6), rng.randint(3, 8)), [rng.randint(990, 999)], (kind(), 1000)),
            ((short, 1, 2, 2), list(range(short - 1, -1, -1)), (kind(), short)),
            ((rng.randint(2, 4), 2, 3, 3), rng.randint(0, 1), (kind(), 2))]


def image_cases(arg_names: Sequence[str], hidden: bool = False) -> list[Case]:
    """Cases with positional args named ``arg_names``: "t", "schedule", or else an image (seeded N(0, I)).
    ``hidden``: four cases drawn from the grader's seed (``hidden_rng``) instead of the fixed visible ones."""
    rng = hidden_rng("image_cases") if hidden else None
    settings, first_seed = (_hidden_image_settings(rng), torch_seed(rng)) if rng else (_IMAGE_CASES, 0)
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
