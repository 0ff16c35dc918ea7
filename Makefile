# make demo: train one- and two-glance models on the embedded cluttered digits, print the comparison.
# make test: the whole test suite. Both create .venv and install everything they need.
VENV ?= .venv
PY := $(VENV)/bin/python
# glibc returns freed activations to the OS every step otherwise (training time flips between 17 and 31 ms/step)
export MALLOC_MMAP_THRESHOLD_ ?= 33554432
export MALLOC_TRIM_THRESHOLD_ ?= 4294967296

.PHONY: install demo test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0  # the CPU build; a bare `torch` would pull a multi-GB CUDA build
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: install
	rm -rf runs/demo
	$(PY) -m multiglance train --preset digits-one --out runs/demo/one
	$(PY) -m multiglance train --preset digits-two --out runs/demo/two
	$(PY) -m multiglance compare runs/demo/one runs/demo/two --plot runs/demo/curves.png

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
