# The newcomer's commands. Each starts what it needs (PostgreSQL, the search engine).
#   make demo   services up, migrate, a worker and a producer, then a summary
#   make test   every test against the real PostgreSQL and the real engine (CI runs this)
#   make bench  the end-to-end bench (target/bench/report.json)
#   make labs   the runbook's failure labs v1-v4 (full size)
#   make soak   the chaos soak (target/soak/report.json)
.PHONY: demo test labs bench bench-quick soak services stop lint build

demo:
	scripts/demo.sh

test:
	scripts/test.sh

labs:
	scripts/labs.sh

bench:
	scripts/bench.sh

bench-quick:
	scripts/bench.sh --quick

soak:
	scripts/soak.sh

services:
	scripts/services.sh start

stop:
	scripts/services.sh stop

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

build:
	cargo build --release -p outbox-worker
