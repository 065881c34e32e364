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

# PyTorch's CPU build instead of PyPI's (which brings CUDA), e.g. `make lab TORCH_INDEX=https://download.pytorch.org/whl/cpu`
TORCH_INDEX ?=

.PHONY: setup lab fresh instructor test test-unit test-notebooks notebooks assignments test-gpu browser clean book book-env

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

test: $(STAMP) $(INSTRUCTOR_STAMP) $(BOOK_STAMP) browser
	env -u MPLBACKEND MINIDIFF_PROFILE=smoke OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(WORKERS) --dist loadscope \
		--nbval-lax --nbval-current-env -p no:cacheprovider tests notebooks solutions

test-unit: $(STAMP)
	$(BIN)/python -m pytest -n $(WORKERS) tests

test-notebooks: $(STAMP)
	MINIDIFF_PROFILE=smoke OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(WORKERS) --dist loadscope \
		--nbval-lax --nbval-current-env notebooks solutions

# Regenerate the student notebooks (notebooks/) from the single source (solutions/).
notebooks: $(STAMP)
	$(BIN)/python -m minidiff.course.nbgen

# The nbgrader course in course/ (gitignored): nbgrader_config.py, source/NN_*/ from solutions/, and
# release/NN_*/, the student versions nbgrader generates. See INSTRUCTORS.md for the rest of the workflow.
assignments: $(INSTRUCTOR_STAMP)
	$(BIN)/python -m minidiff.course.grading assignments --course course

# Every notebook in the `full` profile on a CUDA machine (brings its own wheels if needed).
test-gpu:
	bash scripts/gpu_suite.sh

# The course as a website (book/ and minidiff/course/book.py): the solutions executed, then Sphinx, into
# book/_build/html/. Each page comes from the GPU suite's run where EXECUTED names its folder and it holds
# that notebook (make book EXECUTED=gpu_suite_out), otherwise from a run here in BOOK_PROFILE (cached in
# book/_build/executed/ until the notebook changes). CI builds it in `smoke` inside `make test`.
$(BOOK_STAMP): $(INSTRUCTOR_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[course,instructor,book]'
	rm -f $(VENV)/.book-*
	touch $(BOOK_STAMP)

book-env: $(BOOK_STAMP)

book: $(BOOK_STAMP)
	env -u MPLBACKEND $(BIN)/python -m minidiff.course.book --profile $(BOOK_PROFILE) $(addprefix --executed ,$(EXECUTED))

# Debian's Chromium for the real-browser test; skipped quietly where it cannot be installed.
browser:
	-@bash scripts/install_browser.sh

clean:
	rm -rf $(VENV) .pytest_cache
