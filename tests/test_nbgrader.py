"""Real nbgrader on notebook 02: generate_assignment, three submissions autograded, feedback, export (issue 16);
and on notebook 01: eight submissions, cheats among them, graded two at a time by `make grade`'s command, and a
learner's `make validate` (issue 29).

One module-scoped course directory per notebook does the work once (57 s for 02 on the 2-core CPU, 103 s for
01's eight, two at a time, under load); the tests read it.
"""
import csv
import html
import io
import re
from pathlib import Path

import nbformat
import pytest

from minidiff.course import exercises, grading, nbgen

pytest.importorskip("nbgrader", reason="nbgrader is not installed: pip install -e '.[instructor]' (make does)")

pytestmark = pytest.mark.nbgrader
ROOT = Path(__file__).resolve().parents[1]
NAME = "02_closed_form"
WRONG = "alphas_cumprod"                                   # ᾱ from β instead of α: 3 of 4 checks pass
RIGHT, BROKEN = "torch.cumprod(1 - betas, dim=0)", "torch.cumprod(betas, dim=0)"
HIDDEN = f'{nbgen.BEGIN_HIDDEN}\nprint("hidden test ran")\n{nbgen.END_HIDDEN}'


def grade_ids(nb, key):
    return {c.metadata.nbgrader.grade_id: c for c in nb.cells if c.metadata.get("nbgrader", {}).get(key)}


def submit(course, student, nb):
    folder = course / "submitted" / student / NAME
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / f"{NAME}.ipynb")


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A course with notebook 02 (a hidden region added to each check), graded for blank, wrong and worked."""
    tmp = tmp_path_factory.mktemp("nbgrader")
    solution = nbformat.read(ROOT / "solutions" / f"{NAME}.ipynb", as_version=4)
    for cell in grade_ids(solution, "grade").values():
        cell.source += "\n" + HIDDEN
    (tmp / "solutions").mkdir()
    nbformat.write(solution, tmp / "solutions" / f"{NAME}.ipynb")
    course = tmp / "course"
    [release] = grading.generate(course, tmp / "solutions", [NAME])
    blank = nbformat.read(release, as_version=4)

    worked = nbformat.read(release, as_version=4)          # the release with the solution code typed in
    solved = grade_ids(solution, "solution")
    for grade_id, cell in grade_ids(worked, "solution").items():
        cell.source = solved[grade_id].source
    wrong = nbformat.from_dict(worked)
    cell = grade_ids(wrong, "solution")[WRONG]
    assert RIGHT in cell.source, f"{NAME}'s {WRONG} solution changed: expected {RIGHT!r} in it"
    cell.source = cell.source.replace(RIGHT, BROKEN)

    for student, nb in {"blank": blank, "wrong": wrong, "worked": worked}.items():
        submit(course, student, nb)
    grading.nbgrader(["autograde", NAME], course)
    grading.nbgrader(["generate_feedback", NAME], course)
    grading.nbgrader(["export", "--to", "grades.csv"], course)
    return course


def scores(course):
    with open(course / "grades.csv", newline="") as f:
        return {row["student_id"]: (float(row["score"]), float(row["max_score"])) for row in csv.DictReader(f)}


def test_scores_blank_zero_wrong_partial_worked_full(course):
    solution = nbformat.read(ROOT / "solutions" / f"{NAME}.ipynb", as_version=4)
    points = {gid: c.metadata.nbgrader.points for gid, c in grade_ids(solution, "grade").items()}
    total = sum(points.values())
    assert scores(course) == {"blank": (0.0, total), "wrong": (total - points[f"check_{WRONG}"], total),
                              "worked": (total, total)}


def normalised(sources, stub):
    """Each cell's source with its solution stub (nbgen's or nbgrader's) replaced by one marker line."""
    return [re.sub(stub, r"\1<solution>", s, flags=re.MULTILINE) for s in sources]


def test_release_blanks_the_same_cells_as_the_student_notebook(course):
    release = nbformat.read(course / "release" / NAME / f"{NAME}.ipynb", as_version=4)
    student = nbformat.read(ROOT / "notebooks" / f"{NAME}.ipynb", as_version=4)
    assert [c.id for c in release.cells] == [c.id for c in student.cells]
    ours = normalised([c.source for c in student.cells], r"^( *)raise NotImplementedError\(\"Exercise '\w+'.*$")
    theirs = normalised([c.source for c in release.cells], r"^( *)# YOUR CODE HERE\n *raise NotImplementedError\(\)$")
    assert theirs == ours
    assert sum("<solution>" in s for s in ours) == len(grade_ids(release, "solution")) == 4


def test_release_has_no_hidden_tests_but_autograde_runs_them(course):
    text = (course / "release" / NAME / f"{NAME}.ipynb").read_text()
    assert "HIDDEN TESTS" not in text and "hidden test ran" not in text
    graded = nbformat.read(course / "autograded" / "worked" / NAME / f"{NAME}.ipynb", as_version=4)
    printed = [o.get("text", "") for c in graded.cells if c.cell_type == "code" for o in c.outputs]
    assert sum("hidden test ran" in t for t in printed) == 4


def test_feedback_names_the_failed_check(course):
    feedback = {s: (course / "feedback" / s / NAME / f"{NAME}.html").read_text() for s in ("wrong", "worked")}
    assert f"check_{WRONG}" in feedback["wrong"] and "ExerciseError" in feedback["wrong"]
    assert "ExerciseError" not in feedback["worked"]


def test_graded_check_cells_show_no_value_for_nbgrader_to_read_as_a_score(course):
    """nbgrader reads a graded cell's displayed value as partial credit ("Cell output is <function …>, which
    cannot be converted to a float"): a passing hidden check must end its cell without one."""
    graded = nbformat.read(course / "autograded" / "worked" / NAME / f"{NAME}.ipynb", as_version=4)
    checks = [c for c in graded.cells if c.get("metadata", {}).get("nbgrader", {}).get("grade")]
    assert checks
    for cell in checks:
        assert not [o for o in cell.outputs if o.get("output_type") == "execute_result"], cell.source


# -- notebook 01: cheats score 0, and each exercise is graded on its own (issue 29) ------------------------------
NB01 = "01_forward_process"
Q_STEP = ("def q_step(x_prev, t, s, noise):\n    beta = md.extract(s.betas, t, x_prev)\n"
          "    return (1 - beta).sqrt() * x_prev + beta.sqrt() * noise\n")
Q_STEP_WRONG = ("def q_step(x_prev, t, s, noise):\n    abar = md.extract(s.alphas_cumprod, t, x_prev)\n"
                "    return abar.sqrt() * x_prev + (1 - abar).sqrt() * noise\n")
CHAIN = ("def forward_chain(x0, s, steps, noise):\n    kept, x = {0: x0}, x0\n    for i in range(max(steps)):\n"
         "        x = q_step(x, i, s, noise[i])\n        kept[i + 1] = x\n"
         "    return torch.stack([kept[k] for k in steps])\n")
SUBMISSIONS_01 = {                                          # student: (q_step cell, forward_chain cell, points)
    "blank": (None, None, 0),
    "worked": (Q_STEP, CHAIN, 2),
    "patches_checks": (Q_STEP_WRONG + "for _name in dir(mc.exercises):\n    if _name.startswith('check_'):\n"
                       "        setattr(mc.exercises, _name, lambda fn, hidden=False: fn)\n", None, 0),
    "internal_routes": ("def q_step(x_prev, t, s, noise):\n"
                        "    return mc.exercises.EXERCISES['q_step'].reference(x_prev, t, s, noise)\n",
                        "def forward_chain(x0, s, steps, noise, _chain=md.q_chain):\n"
                        "    return _chain(x0, s, steps, noise)\n", 0),
    "wrong_q_step_right_chain": (Q_STEP_WRONG, CHAIN, 1),
    "edits_a_check_cell": (Q_STEP, CHAIN, 2),               # its check cell edited: nbgrader restores it, and warns
    "deletes_a_check_cell": (Q_STEP, CHAIN, 1),             # check_forward_chain deleted: 0 for it, and reported
    # right on the notebook's own cases only (their shapes looked up): the hidden cases, drawn, catch it
    "tuned_to_visible_cases": ("def q_step(x_prev, t, s, noise):\n    beta = md.extract(s.betas, t, x_prev)\n"
                               "    right = (1 - beta).sqrt() * x_prev + beta.sqrt() * noise\n"
                               "    seen = {(2, 1, 4, 4), (3, 1, 8, 8), (4, 1, 28, 28), (2, 3, 6, 6), (5, 2, 4, 4)}\n"
                               "    return right if tuple(x_prev.shape) in seen else x_prev\n", CHAIN, 1),
}


@pytest.fixture(scope="module")
def course01(tmp_path_factory):
    """Notebook 01 released by nbgrader, the submissions above autograded, feedback and grades exported."""
    tmp = tmp_path_factory.mktemp("nbgrader01")
    course = tmp / "course"
    [release] = grading.generate(course, ROOT / "solutions", [NB01])
    for student, (q_step, chain, _) in SUBMISSIONS_01.items():
        nb = nbformat.read(release, as_version=4)
        cells = grade_ids(nb, "solution")
        for grade_id, source in (("q_step", q_step), ("forward_chain", chain)):
            if source is not None:
                cells[grade_id].source = source
        if student == "edits_a_check_cell":
            grade_ids(nb, "grade")["check_q_step"].source = "print('no check here')"
        if student == "deletes_a_check_cell":
            nb.cells.remove(grade_ids(nb, "grade")["check_forward_chain"])
        folder = course / "submitted" / student / NB01
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / f"{NB01}.ipynb")
    summary = io.StringIO()                                 # `make grade`: two at a time, a line per student
    results = grading.grade(course, NB01, jobs=2, out=summary)
    (course / "summary.txt").write_text(summary.getvalue())
    for result in results:
        (course / f"autograde-{result.student}.log").write_text(result.log)
    grading.nbgrader(["generate_feedback", NB01], course)
    grading.nbgrader(["export", "--to", "grades.csv"], course)
    return course


def test_nb01_checksum_warnings_only_for_an_edited_check_cell(course01):
    """The release's check cells lack their hidden tests; that alone must not look like tampering (issue 29.4)."""
    logs = {s: (course01 / f"autograde-{s}.log").read_text() for s in SUBMISSIONS_01}
    assert {s for s, log in logs.items() if "Attribute 'checksum'" in log} == {"edits_a_check_cell"}, logs


def test_nb01_cheats_score_zero_and_a_wrong_q_step_costs_only_its_point(course01):
    got = scores(course01)
    assert {s: got[s][0] for s in SUBMISSIONS_01} == {s: float(p) for s, (_, _, p) in SUBMISSIONS_01.items()}


def test_nb01_feedback_says_why(course01):
    feedback = lambda s: (course01 / "feedback" / s / NB01 / f"{NB01}.html").read_text()
    assert "the checks were changed in this notebook" in feedback("patches_checks")
    internal = feedback("internal_routes")
    assert "q_step calls minidiff's own md.q_step" in internal            # through EXERCISES["q_step"].reference
    assert "forward_chain calls minidiff's own md.q_chain" in internal    # through a default argument
    assert "With your own q_step it does not give these answers" in feedback("wrong_q_step_right_chain")


def test_nb01_grade_summary_reports_each_student_and_a_deleted_check_cell(course01):
    """`make grade`'s summary: one line per student with the score; a deleted check cell (nbgrader: 0 points and
    'needs manual grade', nothing said) is named (issue 29.5, 29.7)."""
    lines = (course01 / "summary.txt").read_text().splitlines()
    by_student = {line.split()[0]: line for line in lines[:-1]}
    assert set(by_student) == set(SUBMISSIONS_01)
    assert lines[-1].startswith(f"{len(SUBMISSIONS_01)} students graded, 2 at a time; 1 need a look")
    for student, (_, _, points) in SUBMISSIONS_01.items():
        assert re.match(rf"{student} +{points} / 2\b", by_student[student]), by_student[student]
    assert "MISSING CHECK CELLS check_forward_chain (deleted or renamed" in by_student["deletes_a_check_cell"]
    assert ["deletes_a_check_cell"] == [s for s, line in by_student.items() if "MISSING" in line or "FAILED" in line]


def test_nb01_feedback_shows_hidden_results_not_hidden_code(course01):
    """The hidden region (its runpy call) is not in any feedback; its result is (issue 29.3)."""
    for student in SUBMISSIONS_01:
        html = (course01 / "feedback" / student / NB01 / f"{NB01}.html").read_text()
        assert "runpy" not in html and "HIDDEN TESTS" not in html and "minidiff.course.grade" not in html, student
    assert "hidden tests pass (4 more cases)" in (course01 / "feedback" / "worked" / NB01 / f"{NB01}.html").read_text()


def test_nb01_hidden_cases_are_drawn_from_the_course_seed(course01, monkeypatch, tmp_path):
    """The course holds the seed, the release does not; the grader drew the hidden cases from it (the failing case
    the feedback names is the course seed's first case, and another seed draws another)."""
    seed = (course01 / exercises.core.SEED_FILE).read_text().strip()
    released = [p.read_bytes() for p in (course01 / "release").rglob("*") if p.is_file()]
    assert len(seed) == 32 and released and not any(seed.encode() in data for data in released)
    assert not list((course01 / "release").rglob(exercises.core.SEED_FILE))
    monkeypatch.chdir(tmp_path)
    drawn = {}
    for key in (seed, "another seed"):
        monkeypatch.setenv(exercises.core.SEED_VARIABLE, key)
        drawn[key] = exercises.image_cases(("x_prev", "t", "schedule", "noise"), hidden=True)[0].description
    assert drawn[seed] != drawn["another seed"]
    feedback = (course01 / "feedback" / "tuned_to_visible_cases" / NB01 / f"{NB01}.html").read_text()
    assert f"q_step is not right yet, on case 1 of 4: {drawn[seed]}" in html.unescape(feedback)


def test_validate_runs_as_the_grader_and_shows_whole_messages(course01, tmp_path):
    """A learner's `make validate`: the grading kernel, a skipped exercise failing, each message whole (issue 29.6)."""
    nb = nbformat.read(course01 / "release" / NB01 / f"{NB01}.ipynb", as_version=4)
    grade_ids(nb, "solution")["q_step"].source = Q_STEP_WRONG
    nbformat.write(nb, tmp_path / f"{NB01}.ipynb")
    out = io.StringIO()
    assert grading.validate(tmp_path / f"{NB01}.ipynb", out=out) == 2
    text = out.getvalue()
    first = re.search(r"ExerciseError: (q_step is not right yet, on case \d of 5: .*)", text).group(1)
    assert len(first) > 100 and not first.endswith("...")         # nbgrader's own validate cuts at 90 characters
    assert "This looks like a common mistake: you wrote the closed-form jump" in text
    assert "forward_chain was not attempted" in text and "Success" not in text
