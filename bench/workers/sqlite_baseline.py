"""The SQLite baseline: plain 100-row INSERT transactions from CLIENTS threads, each with its
own connection, WAL and synchronous=FULL (the broker's settings), for SECONDS.

    python sqlite_baseline.py DIR CLIENTS SECONDS  ->  {"rows_per_s": ..}
"""

import json
import sqlite3
import sys
import threading
import time
from pathlib import Path

directory, clients, seconds = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
path = directory / "baseline.sqlite3"
setup = sqlite3.connect(path)
setup.execute("PRAGMA journal_mode=WAL")
setup.execute(
    "CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, producer_id INTEGER, stored_ms INTEGER, payload TEXT)"
)
setup.commit()
setup.close()
payload = "x" * 100
inserted = [0] * clients
stop_at = time.perf_counter() + seconds


def client(index: int) -> None:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.execute("PRAGMA synchronous=FULL")
    while time.perf_counter() < stop_at:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO rows (producer_id, stored_ms, payload) VALUES (?, ?, ?)",
            [(index, 0, payload)] * 100,
        )
        conn.execute("COMMIT")
        inserted[index] += 100
    conn.close()


started = time.perf_counter()
threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"rows_per_s": sum(inserted) / (time.perf_counter() - started)}))
