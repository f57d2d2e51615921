#!/usr/bin/env bash
# The main job, from a fresh clone: build the broker and the Python package, start the broker
# on its embedded default (SQLite in ./myqueue-data, port 9092) with a bounded retention (each
# topic keeps its newest MYQUEUE_DEMO_RETENTION_BYTES, 100MB by default), and run the
# assignment's two example programs against it, each until it is interrupted with Ctrl-C
# (SIGINT).
#
# Settings (environment): MYQUEUE_DEMO_SECONDS per example (3), MYQUEUE_DEMO_PORT (9092),
# MYQUEUE_DEMO_DATA_DIR (myqueue-data), MYQUEUE_DEMO_RETENTION_BYTES (100MB),
# MYQUEUE_SKIP_BUILD=1 to use what is already built and installed.
set -euo pipefail
# Job control: the broker and the examples run in process groups of their own, so that a
# Ctrl-C on the terminal reaches this script only, and `cleanup` stops them in order. (It does
# not give them back a Ctrl-C that this script inherited as ignored: scripts/example.py does.)
set -m
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
seconds=${MYQUEUE_DEMO_SECONDS:-3}
port=${MYQUEUE_DEMO_PORT:-9092}
data_dir=${MYQUEUE_DEMO_DATA_DIR:-myqueue-data}
base=http://127.0.0.1:$port
retention=${MYQUEUE_DEMO_RETENTION_BYTES:-100MB}

# Ctrl-C for an example, as a user would press it; it gets SECONDS (default 60) to finish
# its stop(), then it is killed, so the demo never runs unbounded.
interrupt() {
  local pid=$1 name=$2 seconds=${3:-60} status=0
  kill -INT "$pid" 2>/dev/null || true
  for _ in $(seq $((seconds * 10))); do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" || status=$?
      [ "$status" = 0 ] || echo "$name exited with status $status after Ctrl-C" >&2
      return "$status"
    fi
    sleep 0.1
  done
  echo "run.sh: FALLBACK: $name did not stop within $seconds s of Ctrl-C; killing it with" \
    "SIGKILL (messages it had accepted but not delivered are lost)" >&2
  kill -KILL "$pid"
  wait "$pid" || true
  return 1
}

# Whatever happens (an error, a Ctrl-C or SIGTERM to this script), stop what this script
# started: the examples first (their stop() needs the broker), then the broker.
broker='' producer='' consumer=''
cleanup() {
  if [ -n "$producer" ]; then interrupt "$producer" examples/producer.py 10 || true; fi
  if [ -n "$consumer" ]; then interrupt "$consumer" examples/consumer.py 10 || true; fi
  if [ -n "$broker" ]; then kill -TERM "$broker" 2>/dev/null || true; fi
  wait 2>/dev/null || true
}
trap cleanup EXIT

if [ "${MYQUEUE_SKIP_BUILD:-0}" != 1 ]; then
  echo "== building (release)"
  cargo build --release -p broker
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --force-reinstall --no-deps .
fi

echo "== starting myqueue-broker on 127.0.0.1:$port (SQLite in $data_dir, each topic keeps its newest $retention)"
"$CARGO_TARGET_DIR/release/myqueue-broker" --listen "127.0.0.1:$port" --data-dir "$data_dir" \
  --retention-bytes "$retention" &
broker=$!
for _ in $(seq 100); do
  curl -fs "$base/healthz" >/dev/null 2>&1 && break
  kill -0 $broker 2>/dev/null || { echo "the broker did not start (is port $port taken?)" >&2; exit 1; }
  sleep 0.1
done

# An example, unchanged, with a working Ctrl-C (see scripts/example.py) and this broker.
example() {
  python3 scripts/example.py "$1" "localhost:$port" &
}

echo "== examples/producer.py for ${seconds}s (it sends to 'my_topic' until Ctrl-C)"
example examples/producer.py
producer=$!
sleep "$seconds"
interrupt $producer examples/producer.py
producer=''
sleep 1  # a retention pass or two after the last message
MYQUEUE_DEMO_BASE=$base MYQUEUE_DEMO_DATA_DIR=$data_dir python3 - <<'PY'
# The standard library only: a fresh machine need not have `requests`.
import json
import os
from urllib.request import urlopen
base = os.environ["MYQUEUE_DEMO_BASE"]
data_dir = os.environ["MYQUEUE_DEMO_DATA_DIR"]
topic = json.load(urlopen(f"{base}/topics/my_topic", timeout=10))
on_disk = sum(entry.stat().st_size for entry in os.scandir(data_dir) if entry.is_file())
print(f"   'my_topic' has had {topic['end_offset']} messages (all runs so far) and keeps the newest "
      f"{topic['messages']}, offsets {topic['start_offset']} to {topic['end_offset'] - 1} "
      f"({topic['bytes'] / 1e6:.0f} MB by retention's count); {data_dir} holds {on_disk / 1e6:.0f} MB")
PY
echo "== a few messages for topic1 and topic2, which the consumer example reads"
for i in 1 2 3; do
  for topic in topic1 topic2; do
    pid=$(curl -fs -X POST "$base/producer/register" -H 'content-type: application/json' -d "{\"topic\":\"$topic\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["producer_id"])')
    curl -fs -X POST "$base/producer/produce" -H 'content-type: application/json' \
      -d "{\"topic\":\"$topic\",\"producer_id\":$pid,\"message\":\"hello $i from $topic\"}" >/dev/null
  done
done

echo "== examples/consumer.py for ${seconds}s (it prints a line per message until Ctrl-C)"
example examples/consumer.py
consumer=$!
sleep "$seconds"
interrupt $consumer examples/consumer.py
consumer=''
echo "== done; stopping the broker (its data stays in $data_dir)"
