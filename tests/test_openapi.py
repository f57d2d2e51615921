"""GET /openapi.json, and schemathesis fuzzing the broker against it on each store: no
server error, and every response (status, content type, body) as the document says.

schemathesis is a PyPI package (``scripts/test.sh`` and ``.ci/run`` install it). The number
of examples per operation is bounded (``MYQUEUE_FUZZ_EXAMPLES``, 10 by default) and the seed
fixed, so a run takes a bounded time and a failure can be replayed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

IN_CI = os.environ.get("CI") == "true"
EXAMPLES = os.environ.get("MYQUEUE_FUZZ_EXAMPLES", "10")
# What "conforms to the document" means here. (Not the checks that expect a fuzzed request to
# be refused, or accepted: the broker reads requests liberally on purpose, see the README.)
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
]


def test_the_document_lists_every_operation(make_broker) -> None:
    broker = make_broker("--store", "memory")
    response = broker.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    doc = response.json()
    assert doc["openapi"].startswith("3.1")
    operations = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    assert operations == {
        ("POST", "/topics"),
        ("GET", "/topics"),
        ("GET", "/topics/{name}"),
        ("PATCH", "/topics/{name}"),
        ("DELETE", "/topics/{name}"),
        ("POST", "/producer/register"),
        ("POST", "/producer/produce"),
        ("POST", "/producer/produce_batch"),
        ("POST", "/consumer/register"),
        ("GET", "/consumer/consume"),
        ("GET", "/size"),
        ("GET", "/consumer/fetch"),
        ("POST", "/consumer/commit"),
        ("GET", "/healthz"),
        ("POST", "/noop"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/ui"),
    }
    # Every documented operation is served: none answers as an unknown route or method.
    for method, path in operations:
        answer = requests.request(method, broker.url + path.replace("{name}", "t"), timeout=30)
        assert answer.status_code != 405, (method, path)
        if answer.status_code == 404:
            assert answer.json()["code"] != "not_found", (method, path)


def schemathesis() -> list[str]:
    """The CLI next to this Python (a venv's), or on the PATH."""
    found = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which(
        "schemathesis"
    )
    if found:
        return [found]
    if IN_CI:
        pytest.fail("schemathesis is missing (pip install schemathesis)")
    pytest.skip("schemathesis is missing: pip install schemathesis")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("store", ["memory", "sqlite", "postgres"])
def test_schemathesis_finds_no_server_error_and_no_nonconforming_response(
    store: str, make_broker, tmp_path: Path, request
) -> None:
    command = schemathesis()
    if store == "memory":
        broker = make_broker("--store", "memory")
    elif store == "sqlite":
        broker = make_broker("--data-dir", str(tmp_path / "data"))
    else:
        broker = make_broker("--database-url", request.getfixturevalue("postgres_url"))
    run = subprocess.run(
        [
            *command,
            "run",
            broker.url + "/openapi.json",
            "--checks",
            ",".join(CHECKS),
            "--max-examples",
            EXAMPLES,
            "--seed",
            "20261203",
            "--request-timeout",
            "40",
            "--no-color",
        ],
        check=False,
        cwd=tmp_path,  # its .hypothesis directory stays out of the repository
        capture_output=True,
        text=True,
        timeout=540,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
