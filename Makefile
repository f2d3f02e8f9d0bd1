# Convenience targets; the README's two commands (scripts/benchmark.sh, scripts/test.sh) need no make.
PY := .venv/bin/python

.PHONY: setup test benchmark bench
setup:
	bash scripts/setup.sh
test:
	bash scripts/test.sh
benchmark:
	bash scripts/benchmark.sh
# Speed and memory figures (minutes on a 2-core CPU); see benchmarks/README.md.
bench: setup
	for script in benchmarks/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done
