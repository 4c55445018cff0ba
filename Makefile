# `make test` and `make demo` do all set-up on a fresh machine: a .venv with the project and its
# dev extra installed. constraints.txt pins the torch and torchvision releases we test with (this
# workplace keeps them on local disk, so the install is offline and takes about a minute).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The demo certifies every 6th digits test image (60 of 360) at n = 100,000, as Cohen et al.
# certified every 20th CIFAR-10 test image: the whole split takes about 25 minutes on 2 cores.
DEMO := $(BIN)/certify --sigma 0.25 --n 100000 --skip 6 --plot

.PHONY: test test-slow test-all lint wheel-check demo models attack-report bench notebook clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# The default suite (tests marked `slow` excluded): about a minute on 2 cores.
test: $(STAMP)
	$(BIN)/python -m pytest -q

# Only the tests marked `slow` (subprocesses, torchrun, the notebook, end-to-end training).
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: $(STAMP)
	$(BIN)/ruff check certify encoders tests benchmarks scripts
	$(BIN)/mypy certify encoders

# Build a wheel from the tree, install it into a fresh virtual environment with the constraints,
# and check that every console script answers --help from there.
wheel-check: $(STAMP)
	bash scripts/wheel_check.sh $(PYTHON)

demo: $(STAMP)
	$(DEMO)

# Retrain the shipped digits models and print the encoder tables of docs/digits.md (3 seeds; about
# 5 minutes on 2 idle cores). Rerunning resumes from the files in runs/defaults.
models: $(STAMP)
	$(BIN)/python scripts/make_defaults.py --work runs/defaults --ship

# The robustness table of docs/attacks.md: clean, naive-PGD and EOT-PGD accuracy of the smoothed digits
# models beside their certified accuracy, and the certificate audit.
attack-report: $(STAMP)
	$(BIN)/python benchmarks/attack_report.py

bench: $(STAMP)
	$(BIN)/python benchmarks/certify_overhead.py
	$(BIN)/python benchmarks/pretrain_throughput.py

# Re-execute the quickstart notebook in place, refreshing its committed outputs.
notebook: $(STAMP)
	$(BIN)/python -c "import nbformat, nbclient; p = 'notebooks/quickstart.ipynb'; nb = nbformat.read(p, 4); nbclient.NotebookClient(nb, timeout=600, kernel_name='python3', record_timing=False).execute(); nbformat.write(nb, p)"

clean:
	rm -rf $(VENV) build dist *.egg-info
