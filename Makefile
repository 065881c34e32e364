# minidiff: `make lab` runs the course, `make test` runs every test. Both set up .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
# CI's machine has 2 cores: one pytest worker per core, one torch thread per worker.
WORKERS ?= 2
# nbgrader, for whoever grades (and for the tests of grading): installed on top of the course's extra.
INSTRUCTOR_STAMP := $(VENV)/.instructor-$(shell cksum pyproject.toml | cut -d' ' -f1)
# The learner's own copies of the notebooks (git-ignored): autosave changes these, never notebooks/.
WORKSPACE := my_notebooks
# The site (make book, below): its own extra, installed on top of the course's.
BOOK_STAMP   := $(VENV)/.book-$(shell cksum pyproject.toml | cut -d' ' -f1)
BOOK_PROFILE ?= default
EXECUTED     ?=
SOLUTIONS    ?= 1

# PyTorch's CPU build instead of PyPI's (which brings CUDA), e.g. `make lab TORCH_INDEX=https://download.pytorch.org/whl/cpu`
TORCH_INDEX ?=

.PHONY: setup lab fresh instructor test lint test-unit test-notebooks notebooks assignments grade validate test-gpu browser clean book book-env

# Setting up .venv says what it does, stays quiet, and ends with one line saying what is ready. setuptools
# announces every editable install with a warning: that one message, and only it, is filtered out.
$(STAMP): pyproject.toml
	@echo "Setting up $(VENV) (the first time takes a few minutes: PyTorch is large) ..."
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --upgrade --quiet pip
	@$(if $(TORCH_INDEX),$(BIN)/python -m pip install --quiet torch torchvision --index-url $(TORCH_INDEX))
	@PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install --quiet -e '.[course]'
	@$(BIN)/python -m minidiff.course.grading kernel >/dev/null
	@$(BIN)/python -m minidiff.course.lab setup $(if $(filter lab,$(MAKECMDGOALS)),--opening)
	@rm -f $(VENV)/.installed-* $(VENV)/.instructor-* $(VENV)/.book-*
	@touch $(STAMP)

setup: $(STAMP)

# JupyterLab refuses to run as root without --allow-root (containers, CI machines).
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

# The learner's JupyterLab: their own copies in $(WORKSPACE)/ (made on first use), the course only (nbgrader's
# menu, buttons and sidebars hidden for this run even where `make test` installed it).
lab: $(STAMP)
	@$(BIN)/python -m minidiff.course.lab workspace
	JUPYTER_CONFIG_PATH=$(abspath $(VENV))/etc/minidiff-learner $(BIN)/jupyter lab $(WORKSPACE)/ $(ROOT_FLAG)

# A fresh copy of one notebook in $(WORKSPACE)/, e.g. `make fresh NB=03` (the old copy moves to $(WORKSPACE)/old/).
fresh: $(STAMP)
	@$(BIN)/python -m minidiff.course.lab fresh $(NB)

# For instructors: nbgrader in .venv, then JupyterLab at the repository's root with nbgrader's tools (INSTRUCTORS.md).
$(INSTRUCTOR_STAMP): $(STAMP)
	@PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install --quiet -e '.[course,instructor]'
	@rm -f $(VENV)/.instructor-*
	@touch $(INSTRUCTOR_STAMP)

instructor: $(INSTRUCTOR_STAMP)
	$(BIN)/jupyter lab $(ROOT_FLAG)

# The tests in one pytest run (tests/): the unit tests; every notebook executed ONCE, the solutions and the student
# versions (tests/test_notebooks.py: a cell that raises fails, as under nbval --nbval-lax; the site's build,
# tests/test_site.py, reuses the solutions' executed copies); the site and JupyterLab in a real browser. The
# notebooks go first, longest first (tests/conftest.py), hence --no-loadscope-reorder. The 15 slowest tests are
# listed at the end. ruff runs first (a second), and the tests run whatever it says; make fails if either did.
RUFF   := $(BIN)/ruff check minidiff tests benchmarks scripts
PYTEST := env -u MPLBACKEND MINIDIFF_PROFILE=smoke OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(WORKERS) \
	--dist loadscope --no-loadscope-reorder -p no:cacheprovider --durations=15

test: $(STAMP) $(INSTRUCTOR_STAMP) $(BOOK_STAMP) browser
	@lint=0; echo "$(RUFF)"; $(RUFF) || lint=1; \
	echo "$(PYTEST) tests"; $(PYTEST) tests && exit $$lint

# ruff, as configured in pyproject.toml ([tool.ruff]), over the package, the tests, the benchmarks and the scripts.
lint: $(STAMP)
	$(RUFF)

# The same tests without the notebooks (and the site, built from them), or only those.
test-unit: $(STAMP)
	$(PYTEST) -m "not notebooks" tests

test-notebooks: $(STAMP)
	$(PYTEST) -m notebooks tests

# Regenerate the student notebooks (notebooks/) from the single source (solutions/).
notebooks: $(STAMP)
	$(BIN)/python -m minidiff.course.nbgen

# The nbgrader course in course/ (gitignored): nbgrader_config.py, source/NN_*/ from solutions/, and
# release/NN_*/, the student versions nbgrader generates. See INSTRUCTORS.md for the rest of the workflow.
assignments: $(INSTRUCTOR_STAMP)
	$(BIN)/python -m minidiff.course.grading assignments --course course

# Autograde every submission in course/submitted/*/NB/, JOBS at a time (one torch thread each), then one line per
# student: the score, and any check cell the submission lacks. `make grade NB=06_sampling JOBS=4`.
JOBS ?= $(WORKERS)
grade: $(INSTRUCTOR_STAMP)
	@test -n "$(NB)" || { echo "usage: make grade NB=06_sampling [JOBS=$(JOBS)]" >&2; exit 2; }
	$(BIN)/python -m minidiff.course.grading grade $(NB) --course course --jobs $(JOBS)

# A learner's check before handing in: nbgrader's validate as the grader runs it (smoke, one thread, full messages).
# `make validate NB=my_notebooks/01_forward_process.ipynb` (installs nbgrader, the instructor extra, on first use).
validate: $(INSTRUCTOR_STAMP)
	@test -n "$(NB)" || { echo "usage: make validate NB=path/to/notebook.ipynb" >&2; exit 2; }
	$(BIN)/python -m minidiff.course.grading validate $(NB)

# On a CUDA machine: the unit tests, every solution notebook once in `full` (kept in gpu_suite_out/, for the site),
# every student notebook in `smoke` (brings its own wheels if needed; scripts/gpu_suite.sh says how to split it).
test-gpu:
	bash scripts/gpu_suite.sh

# The course as a website (book/ and minidiff/course/book.py): the solutions executed, then Sphinx, into
# book/_build/html/. Each page comes from the GPU suite's run where EXECUTED names its folder and it holds
# that notebook (make book EXECUTED=gpu_suite_out), otherwise from a run here in BOOK_PROFILE (cached in
# book/_build/executed/ until the notebook changes). CI builds it in `smoke` inside `make test`.
# SOLUTIONS=0 builds it from the student notebooks instead: exercises blank, no solution on the site (INSTRUCTORS.md).
$(BOOK_STAMP): $(INSTRUCTOR_STAMP)
	@echo "Installing the site's tools (the book extra) into $(VENV) ..."
	@PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install --quiet -e '.[course,instructor,book]'
	@rm -f $(VENV)/.book-*
	@touch $(BOOK_STAMP)

book-env: $(BOOK_STAMP)

book: $(BOOK_STAMP)
	env -u MPLBACKEND $(BIN)/python -m minidiff.course.book --profile $(BOOK_PROFILE) $(addprefix --executed ,$(EXECUTED)) \
		$(if $(filter 0 no false,$(SOLUTIONS)),--no-solutions)

# Debian's Chromium for the real-browser test; skipped quietly where it cannot be installed.
browser:
	-@bash scripts/install_browser.sh

clean:
	rm -rf $(VENV) .pytest_cache
