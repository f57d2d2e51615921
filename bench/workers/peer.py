"""One workload of bench/peers.py against one system, in a process of its own.

    python peer.py SYSTEM SETTINGS_JSON prepare TOPIC
    python peer.py SYSTEM SETTINGS_JSON produce TOPIC COUNT SIZE  ->  {"seconds", "rate"}
    python peer.py SYSTEM SETTINGS_JSON drain TOPIC COUNT         ->  {"seconds", "rate"}
    python peer.py SYSTEM SETTINGS_JSON receive TOPIC COUNT TIMEOUT
        prints "ready" once it waits, then {"count", "p50_ms", "p99_ms", "max_ms"}
    python peer.py SYSTEM SETTINGS_JSON send TOPIC RATE COUNT

Times run from the client's construction (connect/register) to the last acknowledgement or
the last message; imports are not timed.
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from systems import SYSTEMS
from systems.base import stamped_ns

system, settings, role, topic = SYSTEMS[sys.argv[1]], json.loads(sys.argv[2]), *sys.argv[3:5]
args = sys.argv[5:]
system.load()  # imports outside the timed part


def timed(count: int, work: str) -> None:
    started = time.perf_counter()
    client = system.client(settings)
    if work == "produce":
        client.produce(topic, count, b"x" * int(args[1]))
    else:
        client.drain(topic, count)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "rate": count / seconds}))


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


if role == "prepare":
    system.client(settings).prepare(topic)
    print("{}")
elif role in ("produce", "drain"):
    timed(int(args[0]), role)
elif role == "send":
    system.client(settings).send_paced(topic, float(args[0]), int(args[1]))
    print("{}")
elif role == "receive":
    count, timeout = int(args[0]), float(args[1])
    got = system.client(settings).receive(topic, count, lambda: print("ready", flush=True), timeout)
    delays = sorted((at - stamped_ns(payload)) / 1e6 for at, payload in got)
    if len(delays) != count:
        raise SystemExit(f"received {len(delays)} of {count}")
    result = {
        "count": len(delays),
        "p50_ms": percentile(delays, 0.50),
        "p99_ms": percentile(delays, 0.99),
        "max_ms": delays[-1],
    }
    print(json.dumps(result))
else:
    raise SystemExit(f"unknown role {role}")
