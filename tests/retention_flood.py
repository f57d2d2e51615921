"""Sends to one topic with ``MyProducer`` at full speed for a while, then stops it.

    python retention_flood.py ADDRESS TOPIC SECONDS

Message i is ``flood-`` and i in 12 digits (18 bytes). Prints one JSON line at the end:
``{"accepted": N, "failed": null or the error}``. Run as its own process so that its
sending does not compete for the GIL with the test that watches it.
"""

import json
import sys
import time

from myqueue import MyProducer

address, topic, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
accepted = 0
failed = None
producer = MyProducer([topic], address)
deadline = time.monotonic() + seconds
try:
    while time.monotonic() < deadline:
        for _ in range(1000):
            producer.send(topic, f"flood-{accepted:012d}")
            accepted += 1
finally:
    try:
        producer.stop()
    except Exception as err:  # noqa: BLE001 -- reported, not raised: the test decides
        failed = f"{type(err).__name__}: {err}"
    print(json.dumps({"accepted": accepted, "failed": failed}), flush=True)
