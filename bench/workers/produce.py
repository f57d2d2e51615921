"""MyProducer from one process: COUNT messages of SIZE bytes, timed until stop() returns.

python produce.py ADDRESS TOPIC COUNT SIZE [MAX_IN_FLIGHT]
    ->  {"seconds": .., "rate": .., "peak_rss_mb": ..}

MAX_IN_FLIGHT (default: the producer's default) is for A/B runs against a broker from before
max_in_flight, which recognises a retry of the last batch only: pass 1 there.
"""

import json
import resource
import sys
import time

from myqueue import MyProducer

address, topic, count, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
message = b"x" * size
options = {"max_in_flight": int(sys.argv[5])} if len(sys.argv) > 5 else {}
producer = MyProducer([topic], address, **options)
send = producer.send
started = time.perf_counter()
for _ in range(count):
    send(topic, message)
producer.stop()
seconds = time.perf_counter() - started
print(
    json.dumps(
        {
            "seconds": seconds,
            "rate": count / seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )
)
