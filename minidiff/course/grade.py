r"""The graded call in a check cell's hidden region, out of reach of the cells above it.

nbgrader runs every cell of a submission in one kernel, so a student cell can rebind anything the checks
reach by name (``mc.exercises.check_q_step = lambda fn, hidden=False: fn``, a private helper, a tolerance,
minidiff's own ``diffusion.q_step``). The locked cell therefore does not go through those names:

    import runpy; runpy.run_module("minidiff.course.grade")["hidden"]("q_step", q_step)

``runpy`` executes this file anew (not the module object in ``sys.modules``), and ``hidden``

1. loads a fresh copy of the exercise checks from their files, under a private name, and runs the
   exercise's hidden cases with it (the learner's function is watched as every check watches it). The package
   stores no hidden case: the fresh checks draw them from the course's secret seed, ``hidden_cases.seed`` in the
   nbgrader course directory above the notebook being graded (``exercises.core.hidden_seed``), which
   ``make assignments`` writes and no release holds;
2. compares the checks in memory (functions, tolerances, cases, the registry) with that fresh copy,
   and every minidiff library module in memory with its file: anything changed, and the check
   fails with "the checks were changed in this notebook" or "minidiff's own … was changed in this
   notebook", scoring 0.

What stays trusted: Python itself, torch, ``runpy`` and the files on disk.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib.util
import re
import sys
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch

_COURSE = Path(__file__).resolve().parent           # minidiff/course, found by runpy, not read from a module
_PACKAGE = _COURSE.parent                           # minidiff/
_FRESH = "minidiff._graded_course"                  # where the fresh copy of the checks lives while it runs
_MISSING = object()
_STATE = {"_FAILED", "_HERE"}                       # what a check changes as it runs (failures remembered, globals)


def hidden(name: str, fn: Callable) -> None:
    """The graded check of exercise ``name``: the hidden cases, run by a fresh copy of the checks, after making
    sure nothing the checks rely on was changed in this notebook."""
    with _fresh_exercises() as fresh:
        if name not in fresh.EXERCISES:
            raise ValueError(f"name must be one of the exercises {sorted(fresh.EXERCISES)}; got {name!r}")
        library, checks = library_changed(), checks_changed(fresh)
        if library or checks:
            what = (f"{' and '.join(library[:3])} {'was' if len(library) == 1 else 'were'} changed in this notebook"
                    if library else f"the checks were changed in this notebook ({', '.join(checks[:3])})")
            raise fresh.ExerciseError(f"{name}: {what}, so this check scores 0. Remove the cell that changes "
                                      f"{'it' if len(library) == 1 else 'them'} and run the notebook again from the "
                                      f"top.", name)
        getattr(fresh, f"check_{name}")(fn, hidden=True)


# -- a fresh copy of the checks ------------------------------------------------------------------------------
@contextmanager
def _fresh_exercises() -> Iterator[Any]:
    """``minidiff.course.exercises`` executed anew from its files as ``minidiff._graded_course.exercises``
    (its ``from ... import diffusion`` still reaches the library in memory, which ``library_changed`` vouches for).
    It stays in sys.modules while the check runs (the checks import lazily), and is removed afterwards."""
    package_name = f"{_FRESH}.exercises"
    saved = {k: v for k, v in sys.modules.items() if k == _FRESH or k.startswith(_FRESH + ".")}
    for key in saved:
        del sys.modules[key]
    try:
        sys.modules[_FRESH] = parent = types.ModuleType(_FRESH)
        parent.__path__ = [str(_COURSE)]
        spec = importlib.util.spec_from_file_location(package_name, _COURSE / "exercises" / "__init__.py",
                                                      submodule_search_locations=[str(_COURSE / "exercises")])
        package = importlib.util.module_from_spec(spec)
        sys.modules[package_name] = package
        spec.loader.exec_module(package)
        yield package
    finally:
        for key in [k for k in sys.modules if k == _FRESH or k.startswith(_FRESH + ".")]:
            del sys.modules[key]
        sys.modules.update(saved)


# -- what changed in memory ------------------------------------------------------------------------------------
def checks_changed(fresh: types.ModuleType) -> list[str]:
    """How the checks in memory (``minidiff.course.exercises`` and its modules) differ from a fresh copy."""
    changed = []
    for fresh_name, fresh_module in list(sys.modules.items()):
        if not fresh_name.startswith(f"{_FRESH}.exercises"):
            continue
        live_name = "minidiff.course" + fresh_name[len(_FRESH):]
        live = sys.modules.get(live_name)
        if live is None:
            continue                                 # never imported here: nothing to have changed
        for key, value in vars(fresh_module).items():
            if key.startswith("__") or key in _STATE or isinstance(value, types.ModuleType):
                continue
            if not _same(value, getattr(live, key, _MISSING), fresh_name, live_name):
                changed.append(f"{live_name.replace('minidiff.course.', 'mc.')}.{key}")
    return changed


def library_changed() -> list[str]:
    """minidiff's own functions (outside the course) that differ from their files: a function replaced, or its
    code swapped."""
    changed = []
    for name, module in list(sys.modules.items()):
        if not name.startswith("minidiff.") or name.startswith(("minidiff.course", _FRESH)) or module is None:
            continue
        path = _PACKAGE.joinpath(*name.split(".")[1:])
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        if path.is_file():
            public = name.replace("minidiff.", "md.")
            changed += [f"minidiff's own {public}.{what}" for what in _module_changes(module, path)]
    return changed


def _module_changes(module: types.ModuleType, path: Path) -> list[str]:
    """The top-level functions and methods of ``module`` whose object in memory does not run its file's code."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    codes = dict(_code_tree(compile(tree, str(path), "exec")))
    reassigned = {t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign))
                  for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)}
    changed = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name not in reassigned:
            if not _runs(vars(module).get(node.name, _MISSING), codes.get(node.name)):
                changed.append(node.name)
        elif isinstance(node, ast.ClassDef) and node.name not in reassigned:
            cls = vars(module).get(node.name)
            if not isinstance(cls, type):
                changed.append(node.name)
                continue
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    qualname = f"{node.name}.{item.name}"
                    if not _runs(_function_of(cls.__dict__.get(item.name, _MISSING)), codes.get(qualname)):
                        changed.append(qualname)
    return changed


def _code_tree(code: types.CodeType) -> Iterator[tuple[str, types.CodeType]]:
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield const.co_qualname, const
            yield from _code_tree(const)


def _function_of(obj: Any) -> Any:
    if isinstance(obj, (classmethod, staticmethod)):
        return obj.__func__
    if isinstance(obj, property):
        return obj.fget
    return obj


def _runs(obj: Any, code: Optional[types.CodeType]) -> bool:
    """Whether ``obj`` (past decorators such as torch.no_grad) runs ``code``."""
    if code is None:
        return True                                 # nothing to compare with (a def inside an if, say)
    function = _function_of(obj)
    while hasattr(function, "__wrapped__"):
        function = function.__wrapped__
    return getattr(function, "__code__", None) == code


_ADDRESS = re.compile(r" at 0x[0-9a-f]+")


def _same(fresh: Any, live: Any, fresh_module: str, live_module: str, depth: int = 0) -> bool:
    """Whether ``live`` is what ``fresh`` is, for a copy of the same source: functions by their code and
    defaults, containers and dataclasses item by item, tensors by value, the rest by their repr."""
    if depth > 6:
        return True
    same = lambda a, b: _same(a, b, fresh_module, live_module, depth + 1)
    if isinstance(fresh, types.FunctionType):
        return (isinstance(live, types.FunctionType) and live.__code__ == fresh.__code__
                and same(fresh.__defaults__, live.__defaults__) and same(fresh.__kwdefaults__, live.__kwdefaults__))
    if isinstance(fresh, type):
        return (isinstance(live, type) and live.__qualname__ == fresh.__qualname__
                and all(same(v, live.__dict__.get(k, _MISSING)) for k, v in vars(fresh).items()
                        if isinstance(v, (types.FunctionType, classmethod, staticmethod))))
    if isinstance(fresh, (classmethod, staticmethod)):
        return type(live) is type(fresh) and same(fresh.__func__, live.__func__)
    if dataclasses.is_dataclass(fresh) and not isinstance(fresh, type):
        return (type(live).__qualname__ == type(fresh).__qualname__ and dataclasses.is_dataclass(live)
                and all(same(getattr(fresh, f.name), getattr(live, f.name, _MISSING))
                        for f in dataclasses.fields(fresh)))
    if isinstance(fresh, (list, tuple)):
        return type(live) is type(fresh) and len(live) == len(fresh) and all(map(same, fresh, live))
    if isinstance(fresh, dict):
        return (isinstance(live, dict) and list(live) == list(fresh)
                and all(same(v, live[k]) for k, v in fresh.items()))
    if isinstance(fresh, torch.Tensor):
        return isinstance(live, torch.Tensor) and live.shape == fresh.shape and bool(torch.equal(live, fresh))
    if isinstance(fresh, types.BuiltinFunctionType) or callable(fresh) and not isinstance(fresh, type):
        return True                                 # torch's functions and other objects from outside the checks
    return _ADDRESS.sub("", repr(live).replace(live_module, fresh_module)) == _ADDRESS.sub("", repr(fresh))
