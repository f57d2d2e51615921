#!/usr/bin/env bash
# The fault soaks at full length (tests/soak.py; the test suite runs short ones):
#   kill-sqlite, kill-postgres  20 `kill -9` + restarts of the broker, one every 3 s
#   pg-restart                  5 immediate-mode stops and restarts of PostgreSQL
#   haproxy                     three brokers on one PostgreSQL behind haproxy, one killed and
#                               brought back every 3 s, 20 times
#   disk-full                   a SQLite broker on a 24 MiB tmpfs filled up (needs root)
# each under 4 MyProducer processes (250 messages/s each) and 2 MyConsumer groups. Prints the
# counts (cycles, acknowledged, lost, stored twice, delivered twice) and writes them as JSON to
# soak-report.json (or $SOAK_REPORT); exits non-zero if anything acknowledged was lost, stored
# twice or out of order. About 6 minutes on 2 cores.
#
#   bash scripts/soak.sh                                 # everything
#   bash scripts/soak.sh --scenario haproxy --cycles 5   # one scenario, shorter
#
# Needs the release broker and the package installed (as scripts/test.sh leaves them), the
# PostgreSQL server binaries and haproxy (installed here with apt-get when root). Each
# PostgreSQL scenario starts a throwaway server of its own (scripts/throwaway-postgres.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
export MYQUEUE_BROKER=${MYQUEUE_BROKER:-$CARGO_TARGET_DIR/release/myqueue-broker}

bash scripts/install-haproxy.sh
[ -x "$MYQUEUE_BROKER" ] || cargo build --release -p broker
python3 -c 'import myqueue' 2>/dev/null ||
  python3 -m pip install -q --disable-pip-version-check --no-deps .

exec python3 tests/soak.py run --report "${SOAK_REPORT:-soak-report.json}" "$@"
