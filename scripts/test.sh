#!/usr/bin/env bash
# Every test: the lint gates (scripts/lint.sh), Rust unit tests and the store conformance suite
# (memory, SQLite, PostgreSQL), then the black-box tests (pytest) against the release broker
# binary and the installed wheel.
#
# PostgreSQL: the server at TEST_DATABASE_URL if set; otherwise a throwaway server started
# here (PostgreSQL's server binaries must be installed: apt-get install -y postgresql).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# One target directory for cargo and for maturin (pip install .): release artifacts are shared.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}

python3 -m pip install -q --disable-pip-version-check pytest pytest-timeout requests

pg_dir=""
cleanup() {
  if [ -n "$pg_dir" ]; then
    bash scripts/throwaway-postgres.sh stop "$pg_dir" || true
    rm -rf "$pg_dir"
  fi
}
trap cleanup EXIT
if [ -z "${TEST_DATABASE_URL:-}" ]; then
  if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    pg_dir=$(mktemp -d /tmp/myqueue-test-pg.XXXXXX)
    TEST_DATABASE_URL=$(bash scripts/throwaway-postgres.sh start "$pg_dir")
    export TEST_DATABASE_URL
    echo "test.sh: started a throwaway PostgreSQL at $TEST_DATABASE_URL"
  else
    echo "test.sh: no PostgreSQL server binaries and no TEST_DATABASE_URL: PostgreSQL tests will skip" >&2
  fi
fi

echo "== building the broker and the Python package (release)"
cargo build --release -p broker
python3 -m pip install -q --disable-pip-version-check --force-reinstall --no-deps .

echo "== lint gates (scripts/lint.sh; stubtest checks the package just installed)"
bash scripts/lint.sh

echo "== Rust tests (release profile, sharing the build above)"
cargo test --release --workspace

echo "== black-box tests"
python3 -m pytest tests "$@"

echo "== the Python package's tests against brokers that answer every failure 400"
MYQUEUE_FAILURE_STATUS=400 python3 -m pytest tests/test_client_*.py "$@"
