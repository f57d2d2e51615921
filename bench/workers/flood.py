"""MyProducer at full speed for SECONDS, then stop().

python flood.py ADDRESS TOPIC SECONDS SIZE  ->  {"sent": .., "seconds": ..}
"""

import json
import sys
import time

from myqueue import MyProducer

address, topic, seconds, size = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
message = b"x" * size
producer = MyProducer([topic], address)
send = producer.send
sent = 0
started = time.perf_counter()
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    for _ in range(1000):
        send(topic, message)
    sent += 1000
producer.stop()
print(json.dumps({"sent": sent, "seconds": time.perf_counter() - started}))
