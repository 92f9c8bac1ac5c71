.PHONY: install lint format test smoke check bench

install:
	pip install -e ".[test]"

lint:
	ruff check . && ruff format --check .

format:
	ruff format . && ruff check --fix .

test:
	python -m pytest

smoke:
	python -m bnvae_jax.main --config=configs/tiny.py --workdir=/tmp/bnvae_smoke

check: lint test

bench:
	python benchmarks/run.py --out benchmarks/results.json
