"""Small HTTP helpers for reading what a broker holds, independent of the client library."""

from __future__ import annotations

import requests


def read_topic(base_url: str, topic: str, limit: int = 10_000_000) -> list[tuple[int, str]]:
    """Every (offset, message) of ``topic``, read with a fresh consumer through /consumer/fetch."""
    consumer = requests.post(f"{base_url}/consumer/register", json={"topic": topic}, timeout=30).json()
    consumer_id = consumer["consumer_id"]
    out: list[tuple[int, str]] = []
    offset = 0
    while len(out) < limit:
        page = requests.get(
            f"{base_url}/consumer/fetch",
            params={"topic": topic, "consumer_id": consumer_id, "offset": offset, "max_messages": 10_000},
            timeout=60,
        ).json()
        out.extend((m["offset"], m["message"]) for m in page["messages"])
        if not page["messages"]:
            return out
        offset = page["next_offset"]
    return out


def produce(base_url: str, topic: str, messages: list[str]) -> None:
    """Appends ``messages`` to ``topic`` through the assignment's endpoints."""
    producer_id = requests.post(f"{base_url}/producer/register", json={"topic": topic}, timeout=30).json()[
        "producer_id"
    ]
    with requests.Session() as session:
        for message in messages:
            reply = session.post(
                f"{base_url}/producer/produce",
                json={"topic": topic, "producer_id": producer_id, "message": message},
                timeout=30,
            )
            assert reply.status_code == 200, reply.text
