"""The checks' hidden cases are drawn from a seed that only the course holds; none is stored in the package
(issue 29.3). The draws of any seed still pass every learner's right answer and name every listed mistake."""
import re
from pathlib import Path

import test_exercises
import test_exercises_nb03_nb04

from minidiff.course import exercises as ex
from minidiff.course.exercises import core

PACKAGE = Path(ex.__file__).resolve().parent


def test_the_package_stores_no_hidden_case():
    """What a learner installs: no list of hidden cases in any module, only builders of a random.Random."""
    for path in sorted(PACKAGE.glob("*.py")):
        assert not re.search(r"^_HIDDEN_\w+ *=", path.read_text(encoding="utf-8"), re.MULTILINE), path.name
    for name, module in vars(ex).items():
        if name.startswith("nb") or name == "core":
            stored = [k for k, v in vars(module).items()
                      if "hidden" in k.lower() and isinstance(v, (list, tuple, dict))]
            assert not stored, (name, stored)


def hidden_q_step_cases():
    return [c.description for c in ex.image_cases(("x_prev", "t", "schedule", "noise"), hidden=True)]


def test_hidden_cases_depend_on_the_seed_and_nothing_else(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(core.SEED_VARIABLE, "a")
    first = hidden_q_step_cases()
    assert hidden_q_step_cases() == first
    monkeypatch.setenv(core.SEED_VARIABLE, "b")
    assert hidden_q_step_cases() != first
    monkeypatch.delenv(core.SEED_VARIABLE)               # no course, no seed: new cases each time
    assert hidden_q_step_cases() != hidden_q_step_cases()
    assert ex.image_cases(("x_prev", "t", "schedule", "noise"))[0].description.startswith("x_prev shape (2, 1, 4, 4)")


def test_the_course_seed_wins_and_a_seed_handed_in_does_not(monkeypatch, tmp_path):
    """nbgrader runs a submission in course/submitted/STUDENT/ASSIGNMENT/: the course's file counts, not a variable
    set in a cell, nor a file the student put beside the notebook."""
    course, submission = tmp_path / "course", tmp_path / "course" / "submitted" / "ada" / "01_forward_process"
    submission.mkdir(parents=True)
    (course / core.SEED_FILE).write_text("the course's secret\n")
    (submission / core.SEED_FILE).write_text("the student's guess\n")
    monkeypatch.setenv(core.SEED_VARIABLE, "the student's guess")
    guessed = hidden_q_step_cases()
    monkeypatch.chdir(submission)
    assert core.hidden_seed() == "the course's secret" and hidden_q_step_cases() != guessed
    monkeypatch.setenv(core.SEED_VARIABLE, "the course's secret")
    monkeypatch.chdir(tmp_path)
    drawn = hidden_q_step_cases()
    monkeypatch.chdir(submission)
    assert hidden_q_step_cases() == drawn


def test_the_grader_writes_the_seed_once(tmp_path):
    from minidiff.course import grading
    path = grading.write_seed(tmp_path)
    seed = path.read_text()
    assert path.name == core.SEED_FILE and len(seed.strip()) == 32 and path.stat().st_mode & 0o077 == 0
    assert grading.write_seed(tmp_path).read_text() == seed      # grading again draws the same cases


def test_another_seeds_draws_pass_right_answers_and_name_every_mistake(monkeypatch, capsys):
    """The suite runs with one seed (tests/conftest.py); another course's draw, through the same tests. (Before
    merging, 33 seeds were run this way, all passing.)"""
    monkeypatch.setenv(core.SEED_VARIABLE, "another course")
    test_exercises.test_hidden_checks_pass_learner_solutions(capsys)
    test_exercises.test_every_listed_mistake_is_recognised_by_its_own_check(capsys)
    for check in test_exercises_nb03_nb04.CHECKS:
        test_exercises_nb03_nb04.test_reference_and_learner_pass_visible_and_hidden(check, capsys)
    for check, (_, learner) in test_exercises.CHECKS.items():
        assert check(learner, hidden=True) is None

