# Two commands do everything on a fresh machine:
#   make lab    set up (first time only) and open the course in JupyterLab
#   make test   set up (first time only) and run every test, notebooks included
# Set-up makes a virtual environment in .venv. torch is installed first, pinned, so that
# nothing else pulls in an unexpected build; override with e.g. TORCH_SPEC="torch==2.13.0".

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
LAB_ARGS   ?=
BIN        := $(VENV)/bin
STAMP      := $(VENV)/.installed
# JupyterLab refuses to run as root unless told to (containers, CI boxes).
ROOT_FLAG  := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: setup lab test notebooks student slides clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab $(ROOT_FLAG) --ServerApp.root_dir="$(CURDIR)" $(LAB_ARGS) notebooks/00_start_here.ipynb

test: $(STAMP)
	$(BIN)/python -m pytest

# Maintainers: re-execute the notebooks and store their outputs (NB=01 for just one).
notebooks: $(STAMP)
	$(BIN)/python -m course_lib.authoring run $(NB)

# Teachers: write the student edition (solutions replaced by stubs) to student/.
student: $(STAMP)
	$(BIN)/python -m course_lib.authoring student

# Teachers and maintainers: set every cell's slide type for jupyterlab-rise (NB=03 for just one).
slides: $(STAMP)
	$(BIN)/python -m course_lib.authoring slides $(NB)

clean-venv:
	rm -rf $(VENV)
