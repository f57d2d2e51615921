"""MyConsumer.get_next() draining COUNT messages from the beginning of TOPIC, timed.

python consume.py ADDRESS TOPIC COUNT  ->  {"seconds": .., "rate": ..}
"""

import json
import sys
import time

from myqueue import MyConsumer

address, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
consumer = MyConsumer([topic], address)
taken = 0
started = time.perf_counter()
for msg in consumer.get_next(timeout=30):
    taken += 1
    if taken == count:
        break
seconds = time.perf_counter() - started
consumer.stop()
if taken != count:
    raise SystemExit(f"drained {taken} of {count}")
print(json.dumps({"seconds": seconds, "rate": count / seconds}))
