"""End-to-end latency at a steady rate: a producer process sends RATE messages/s for SECONDS,
each carrying its send time; this process consumes them and reports percentiles of
(receive time - send time).

    python latency.py ADDRESS TOPIC RATE SECONDS  ->  {"p50_ms": .., "p99_ms": .., "count": ..}
"""

import json
import subprocess
import sys
import time

from myqueue import MyConsumer, MyProducer

PRODUCER = """
import sys, time
from myqueue import MyProducer
address, topic, rate, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
producer = MyProducer([topic], address, linger_ms=0)
count = int(rate * seconds)
start = time.perf_counter()
for i in range(count):
    due = start + i / rate
    while True:
        now = time.perf_counter()
        if now >= due:
            break
        time.sleep(min(due - now, 0.0005))
    producer.send(topic, str(time.time_ns()).ljust(100, "."))
producer.stop()
"""

address, topic, rate, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
MyProducer([topic], address).stop()  # the topic exists before the consumer registers
consumer = MyConsumer([topic], address)
count = int(rate * seconds)
sender = subprocess.Popen([sys.executable, "-c", PRODUCER, address, topic, str(rate), str(seconds)])
delays = []
for msg in consumer.get_next(timeout=30):
    delays.append((time.time_ns() - int(str(msg).rstrip("."))) / 1e6)
    if len(delays) == count:
        break
consumer.stop()
sender.wait(timeout=60)
delays.sort()
warm = delays  # every message counts: no warm-up is discarded
print(
    json.dumps(
        {
            "count": len(warm),
            "p50_ms": warm[len(warm) // 2],
            "p99_ms": warm[min(len(warm) - 1, int(len(warm) * 0.99))],
            "max_ms": warm[-1],
        }
    )
)
