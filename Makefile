# Two entry points: `make course` opens the course, `make test` runs every test.
# Both set up what they need first (virtual environment, packages, MNIST) and are
# quick when nothing changed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=
PARALLEL ?= -n auto --dist loadgroup
# Commands run with the environment's programs first on PATH: nbgrader starts `alembic` from
# there when it creates the gradebook, and JupyterLab's Formgrader runs nbgrader.
IN_VENV := PATH="$(CURDIR)/$(VENV)/bin:$$PATH"

.PHONY: course test test-fast setup data gradebook notebooks benchmark hub hub-stop

# JupyterLab refuses to run as root unless told to (containers often run as root).
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

course: setup gradebook
	$(IN_VENV) $(VENV)/bin/jupyter lab $(ALLOW_ROOT) --notebook-dir=. notebooks/01_forward_pass/01_forward_pass.ipynb

# The whole suite, spread over one process per core (tests that share a graded class or a
# notebook's kernel stay in one process), with the 25 slowest tests listed at the end.
test: setup
	$(PY) -m pytest $(PARALLEL) --durations=25 --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg \
		tests course_utils solutions $(PYTEST_ARGS)

# For editing: everything not marked slow (graders, catalogues, doctests, units), in minutes.
test-fast: setup
	$(PY) -m pytest $(PARALLEL) --durations=10 -m "not slow" tests course_utils $(PYTEST_ARGS)

setup: $(INSTALLED) data

# Reinstalls only when the package's dependencies change.
$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $@

# Verifies the MNIST files (a second or two) and fetches them only when missing or corrupt.
data: $(INSTALLED)
	$(PY) -m course_utils.data --quiet

# Records every lesson of LESSONS (nbgrader_config.py) with its points in gradebook.db, so
# that the Formgrader opens at once; generates only the lessons the gradebook lacks.
gradebook: $(INSTALLED)
	$(IN_VENV) $(PY) -m course_utils.autograde.gradebook

# Regenerates the student notebooks from the instructor versions in solutions/.
notebooks: setup
	$(IN_VENV) $(VENV)/bin/nbgrader generate_assignment "*" --force --log-level=WARN

benchmark: setup
	$(PY) benchmarks/bench_mnist_epoch.py
	$(PY) benchmarks/bench_graders.py
	$(PY) benchmarks/bench_doctor.py

# The course on a JupyterHub on this machine, as root (README: "Running the course on a
# JupyterHub"): installs what is missing, creates the users and starts the hub; again, it only
# checks. hub-stop stops the hub and every server it started.
hub:
	deploy/hub/setup.sh start

hub-stop:
	deploy/hub/setup.sh stop
