# The newcomer's commands. Each installs and starts what it needs, so any of them can run
# first on a fresh machine: Debian packages from scripts/deps.sh, then PostgreSQL and the
# search engine from scripts/services.sh.
#   make demo         services up, migrate, a worker and a producer, then a summary
#   make test         every test against the real PostgreSQL and the real engine (CI runs this)
#   make bench        the criterion benches, then the end-to-end bench (target/bench/report.json)
#   make bench-quick  the end-to-end bench at CI size
#   make labs         the runbook's failure labs v1-v4 and the long-transaction lab (full size)
#   make labs-cluster the cluster labs on a three-node OpenSearch started here (full size)
#   make soak         the chaos soak (target/soak/report.json)
#   make stop         stops PostgreSQL and the engine
.PHONY: demo test labs labs-cluster bench bench-quick soak services stop lint build

demo:
	scripts/demo.sh

test:
	scripts/test.sh

labs:
	scripts/labs.sh

labs-cluster:
	scripts/labs-cluster.sh

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
	cargo clippy -p outbox-worker --lib --bins -- -D warnings

build:
	cargo build --release -p outbox-worker
