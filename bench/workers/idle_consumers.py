"""N consumers, each blocked in get_next() on its own empty topic, for SECONDS. Prints when
they are all waiting, then waits for SECONDS and exits.

    python idle_consumers.py ADDRESS N SECONDS
"""

import sys
import threading
import time

from myqueue import MyConsumer, MyProducer

address, n, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
topics = [f"idle-{i}" for i in range(n)]
MyProducer(topics, address).stop()  # create the topics
consumers = [MyConsumer([t], address) for t in topics]


def wait(consumer: MyConsumer) -> None:
    for _ in consumer.get_next():
        raise SystemExit("an idle topic got a message")


threads = [threading.Thread(target=wait, args=(c,), daemon=True) for c in consumers]
for t in threads:
    t.start()
time.sleep(1.0)  # every consumer's long poll is in place
print("waiting", flush=True)
time.sleep(seconds)
for c in consumers:
    c.stop()
print('{"ok": true}')
