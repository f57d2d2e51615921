"""MyProducer from one process: COUNT messages of SIZE bytes, timed until stop() returns.

python produce.py ADDRESS TOPIC COUNT SIZE  ->  {"seconds": .., "rate": .., "peak_rss_mb": ..}
"""

import json
import resource
import sys
import time

from myqueue import MyProducer

address, topic, count, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
message = b"x" * size
producer = MyProducer([topic], address)
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
