import subprocess
import sys

import pytest

import minidiff.course as mc


def test_profile_default_and_pick(monkeypatch):
    monkeypatch.delenv("MINIDIFF_PROFILE", raising=False)
    assert mc.profile() == "default"
    monkeypatch.setenv("MINIDIFF_PROFILE", "smoke")
    assert mc.profile() == "smoke"
    assert mc.by_profile(smoke=1, default=2, full=3) == 1
    monkeypatch.setenv("MINIDIFF_PROFILE", "FULL")
    assert mc.by_profile(smoke=1, default=2, full=3) == 3


def test_bad_profile(monkeypatch):
    monkeypatch.setenv("MINIDIFF_PROFILE", "fast")
    with pytest.raises(ValueError, match=r"MINIDIFF_PROFILE must be one of \('smoke', 'default', 'full'\); got 'fast'"):
        mc.profile()


def _fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_import_minidiff_is_the_library_alone():
    """``import minidiff`` in a fresh process loads no plotting, widget or Jupyter code, nor the course."""
    loaded = _fresh("import sys, minidiff; "
                    "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'ipywidgets', 'IPython', "
                    "'ipykernel', 'nbformat', 'nbgrader', 'sphinx') or m.startswith('minidiff.course')))")
    assert loaded == "[]"


def test_the_library_has_no_profile_switch():
    import minidiff as md
    assert not hasattr(md, "profile") and not hasattr(md, "by_profile") and not hasattr(md, "exercises")


def test_all_names_exist_and_nothing_public_is_left_out():
    import minidiff as md
    assert len(md.__all__) == len(set(md.__all__))
    assert [n for n in md.__all__ if not hasattr(md, n)] == []
    assert [n for n in dir(md) if not n.startswith("_") and n not in md.__all__] == ["course"]   # imported above


def test_course_loads_exercises_and_viz_on_first_use():
    """The course's command-line tools start without matplotlib; ``mc.exercises`` and ``mc.viz`` load when used."""
    out = _fresh("import sys, minidiff.course as mc; a = 'matplotlib' in sys.modules; mc.exercises.check_q_step; "
                 "b = 'matplotlib' in sys.modules; mc.viz.show_grid; print(a, b, 'matplotlib' in sys.modules)")
    assert out == "False False True"
    assert set(mc.__all__) <= set(dir(mc))
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        mc.nope
