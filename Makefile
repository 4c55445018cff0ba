# `make test` and `make demo` do all set-up on a fresh machine: a .venv with the project and its
# dev extra installed (torch and torchvision come from local disk where this workplace keeps them).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The demo certifies every 6th digits test image (60 of 360) at n = 100,000, as Cohen et al.
# certified every 20th CIFAR-10 test image: the whole split takes about 25 minutes on 2 cores.
DEMO := $(BIN)/certify --sigma 0.25 --n 100000 --skip 6 --plot

.PHONY: test test-all demo models attack-report bench notebook clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

demo: $(STAMP)
	$(DEMO)

# Retrain the shipped digits models and print the README's encoder tables (3 seeds; about
# 5 minutes on 2 idle cores). Rerunning resumes from the files in runs/defaults.
models: $(STAMP)
	$(BIN)/python -m encoders.make_defaults --work runs/defaults --ship

# The README's robustness table: clean, naive-PGD and EOT-PGD accuracy of the smoothed digits
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
	rm -rf $(VENV) build *.egg-info
