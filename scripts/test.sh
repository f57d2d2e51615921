#!/usr/bin/env bash
# Every test: the lint gates (scripts/lint.sh), Rust unit tests and the store conformance suite
# (memory, SQLite, PostgreSQL), then the black-box tests (pytest) against the release broker
# binary and the installed wheel.
#
# PostgreSQL: the server at TEST_DATABASE_URL if set; otherwise a throwaway server started
# here. Where its server binaries are missing and this runs as root, they are installed
# (apt-get install postgresql), as .ci/run does; otherwise the PostgreSQL tests skip.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# One target directory for cargo and for maturin (pip install .): release artifacts are shared.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}

python3 -m pip install -q --disable-pip-version-check pytest pytest-timeout requests \
  schemathesis selenium cryptography

pg_dir=""
cleanup() {
  if [ -n "$pg_dir" ]; then
    bash scripts/throwaway-postgres.sh stop "$pg_dir" || true
    rm -rf "$pg_dir"
  fi
}
trap cleanup EXIT
# (The tests that restart PostgreSQL start servers of their own: they need the binaries even
# with TEST_DATABASE_URL set.)
have_postgres() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v psql >/dev/null; }
if ! have_postgres && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "test.sh: installing PostgreSQL's server binaries (apt-get install postgresql)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
fi
# haproxy, for the soak of three brokers behind a load balancer (tests/test_soak.py).
bash scripts/install-haproxy.sh
# Prometheus and Chromium, for the monitoring checks (tests/test_metrics.py, test_dashboard.py).
bash scripts/install-monitoring-tools.sh
if [ -z "${TEST_DATABASE_URL:-}" ]; then
  if have_postgres; then
    pg_dir=$(mktemp -d /tmp/myqueue-test-pg.XXXXXX)
    TEST_DATABASE_URL=$(bash scripts/throwaway-postgres.sh start "$pg_dir")
    export TEST_DATABASE_URL
    echo "test.sh: started a throwaway PostgreSQL at $TEST_DATABASE_URL"
  else
    echo "test.sh: no PostgreSQL server binaries (and not root to install them) and no" \
      "TEST_DATABASE_URL: PostgreSQL tests will skip" >&2
  fi
fi

echo "== building the broker and the Python package (release)"
cargo build --release -p broker
python3 -m pip install -q --disable-pip-version-check --force-reinstall --no-deps .

echo "== lint gates (scripts/lint.sh; stubtest checks the package just installed)"
bash scripts/lint.sh

echo "== Rust tests (release profile, sharing the build above)"
# Per package, not --workspace: the broker's tests then reuse every crate built for the broker
# above, with its own features (a workspace-wide build unifies the client's features into
# tokio, hyper and sqlx, and compiles them all a second time).
cargo test --release -p broker
cargo test --release -p myqueue-py -p myqueue-wire

echo "== black-box tests"
python3 -m pytest tests "$@"

echo "== the Python package's tests against brokers that answer every failure 400"
MYQUEUE_FAILURE_STATUS=400 python3 -m pytest tests/test_client_*.py "$@"
