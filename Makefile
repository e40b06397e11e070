# One command each on a fresh machine: `make quickstart` and `make test` install into .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
QUICKSTART_RUN ?= runs/quickstart
DATA_ROOT ?= ../shared/data

.PHONY: install quickstart test bench lint clean

install: $(STAMP)

# Plain torch/torchvision from the registry: the CUDA build also runs on CPU.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

quickstart: install
	rm -rf $(QUICKSTART_RUN)
	$(PY) -m vision_lightning fit --config configs/quickstart/classification.yaml \
		--trainer.default_root_dir $(QUICKSTART_RUN) --checkpoint.dirpath $(QUICKSTART_RUN)/checkpoints
	$(PY) -m vision_lightning predict --config configs/quickstart/classification.yaml \
		--trainer.default_root_dir $(QUICKSTART_RUN) --trainer.logger false \
		--ckpt_path $(QUICKSTART_RUN)/checkpoints/last.ckpt \
		--prediction_writer.output_dir $(QUICKSTART_RUN)/predictions
	@echo "TensorBoard: $(VENV)/bin/tensorboard --logdir $(QUICKSTART_RUN)"
	@echo "Predictions: $(QUICKSTART_RUN)/predictions/predictions.csv"

test: install
	$(PY) -m pytest

bench: install
	$(PY) benchmarks/run_all.py --data-root $(DATA_ROOT)

lint: install
	$(VENV)/bin/ruff check vision_lightning tests benchmarks
	$(VENV)/bin/ruff format --check vision_lightning tests benchmarks

clean:
	rm -rf runs lightning_logs .pytest_cache
