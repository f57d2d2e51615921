"""Runs one of the assignment's example programs, unchanged, against a test broker.

    python run_example.py examples/producer.py 127.0.0.1:PORT

The examples name ``broker='localhost:9092'``; here ``myqueue.MyProducer`` and
``myqueue.MyConsumer`` are wrapped (before the example imports them) so that the broker
address is replaced by the test broker's and every accepted ``send()`` is counted. The
example's own code runs as written. At exit the wrapper prints one JSON line to stderr:
``{"accepted": N}``.
"""

import atexit
import json
import runpy
import signal
import sys

import myqueue

# Started with SIGINT ignored (pytest run from `nohup`, a CI runner, a script's background job),
# Python installs no KeyboardInterrupt handler and the example would ignore its Ctrl-C: put
# Python's own handler back, as scripts/example.py does for the main job.
signal.signal(signal.SIGINT, signal.default_int_handler)

example, address = sys.argv[1], sys.argv[2]
accepted = 0


class Producer(myqueue.MyProducer):
    def __new__(cls, topics=None, broker="localhost:9092", **options):
        return super().__new__(cls, topics, address, **options)

    def send(self, topic, value):
        global accepted
        # Ctrl-C must not land between the acceptance and the count: SIGINT waits until
        # both are done (it is raised right after, as the example expects).
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            future = super().send(topic, value)
            accepted += 1
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        return future


class Consumer(myqueue.MyConsumer):
    def __new__(cls, topics, broker="localhost:9092", **options):
        return super().__new__(cls, topics, address, **options)


myqueue.MyProducer = Producer
myqueue.MyConsumer = Consumer
atexit.register(lambda: print(json.dumps({"accepted": accepted}), file=sys.stderr, flush=True))
runpy.run_path(example, run_name="__main__")
