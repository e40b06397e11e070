# One command each on a fresh machine: `make quickstart` and `make test` install into .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
QUICKSTART_RUN ?= runs/quickstart
QUICKSTART_TASKS ?= classification segmentation superres style detection
DATA_ROOT ?= ../shared/data

.PHONY: install quickstart test notebooks bench lint clean

install: $(STAMP)

# Plain torch/torchvision from the registry: the CUDA build also runs on CPU.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev,export]"
	touch $(STAMP)

# Each task's quickstart config trains on built-in synthetic data, then predicts its test split.
quickstart: install
	rm -rf $(QUICKSTART_RUN)
	set -e; for task in $(QUICKSTART_TASKS); do \
		run=$(QUICKSTART_RUN)/$$task; \
		$(PY) -m vision_lightning fit --config configs/quickstart/$$task.yaml \
			--trainer.default_root_dir $$run --checkpoint.dirpath $$run/checkpoints; \
		$(PY) -m vision_lightning predict --config configs/quickstart/$$task.yaml \
			--trainer.default_root_dir $$run --trainer.logger false \
			--ckpt_path $$run/checkpoints/last.ckpt --prediction_writer.output_dir $$run/predictions; \
	done
	@echo "TensorBoard: $(VENV)/bin/tensorboard --logdir $(QUICKSTART_RUN)"
	@echo "Predictions: $(QUICKSTART_RUN)/<task>/predictions/"

test: install
	$(PY) -m pytest

# Re-run every notebook and store its outputs in it (tests/test_notebooks.py runs them without storing).
notebooks: install
	$(PY) notebooks/execute.py

bench: install
	$(PY) benchmarks/run_all.py --data-root $(DATA_ROOT)

lint: install
	$(VENV)/bin/ruff check vision_lightning tests benchmarks notebooks
	$(VENV)/bin/ruff format --check vision_lightning tests benchmarks notebooks

clean:
	rm -rf runs lightning_logs .pytest_cache
