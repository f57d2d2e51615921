"""Runs one of the assignment's example programs, unchanged, with a working Ctrl-C.

    python3 scripts/example.py examples/producer.py [HOST:PORT]

- Ctrl-C: a process started in the background by a shell without job control (`cmd &` in a
  script, `nohup`, many CI runners) inherits SIGINT *ignored*, and Python then installs no
  KeyboardInterrupt handler: the example would ignore its Ctrl-C and run until it is killed,
  losing what its producer had accepted. Python's own handler is put back before the example
  runs, so its `finally: producer.stop()` runs on Ctrl-C however the job was started.
- The broker: the examples name `localhost:9092`. Given another address, `MyProducer` and
  `MyConsumer` are wrapped (before the example imports them) so that they use it instead.
"""

import runpy
import signal
import sys

import myqueue

signal.signal(signal.SIGINT, signal.default_int_handler)

example = sys.argv[1]
address = sys.argv[2] if len(sys.argv) > 2 else "localhost:9092"

if address != "localhost:9092":

    class Producer(myqueue.MyProducer):
        def __new__(cls, topics=None, broker="localhost:9092", **options):
            return super().__new__(cls, topics, address, **options)

    class Consumer(myqueue.MyConsumer):
        def __new__(cls, topics, broker="localhost:9092", **options):
            return super().__new__(cls, topics, address, **options)

    myqueue.MyProducer = Producer
    myqueue.MyConsumer = Consumer

sys.argv = [example]
runpy.run_path(example, run_name="__main__")
