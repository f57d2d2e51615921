"""The fault soaks of ``tests/soak.py``, short: a few faults each, so that the test suite
runs every scenario. ``scripts/soak.sh`` runs them at full length (20 broker kills, 5
PostgreSQL restarts) and reports the counts.

``MYQUEUE_SOAK_CYCLES`` (default 3), ``MYQUEUE_SOAK_INTERVAL`` (seconds between faults,
default 2) and ``MYQUEUE_SOAK_RATE`` (messages a second per producer, default 250) tune the
length. A soak that finds a message lost, stored twice or out of order fails and names its
work directory (kept, with every process's log)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import soak
from conftest import IN_CI, broker_binary

CYCLES = int(os.environ.get("MYQUEUE_SOAK_CYCLES", "3"))
INTERVAL = float(os.environ.get("MYQUEUE_SOAK_INTERVAL", "2"))
RATE = float(os.environ.get("MYQUEUE_SOAK_RATE", "250"))
SOAK_TIMEOUT = 600

# Only under CI may a scenario not skip for lack of PostgreSQL or haproxy: .ci/run and
# scripts/test.sh install both.
MUST_RUN = IN_CI


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The soak's work directory; the broker binary for the harness (for this test only)."""
    monkeypatch.setenv("MYQUEUE_BROKER", str(broker_binary()))
    return tmp_path


def run(name: str, work: Path, cycles: int = CYCLES) -> soak.Report:
    try:
        report = soak.run_scenario(
            name, cycles, INTERVAL, RATE, work, os.environ.get("TEST_DATABASE_URL")
        )
    except soak.SkipScenario as why:
        if MUST_RUN and name != "disk-full":
            pytest.fail(f"{name} cannot run under CI: {why}")
        pytest.skip(str(why))
    print(report.line())
    problems = report.problems()
    if problems:
        kept = Path(shutil.copytree(work, f"/tmp/myqueue-soak-failed-{name}-{os.getpid()}"))
        pytest.fail(f"{report.line()}: {'; '.join(problems)} (logs in {kept})")
    assert report.cycles == cycles
    return report


@pytest.mark.timeout(SOAK_TIMEOUT)
def test_broker_killed_under_load_on_sqlite(work: Path) -> None:
    run("kill-sqlite", work)


@pytest.mark.timeout(SOAK_TIMEOUT)
def test_broker_killed_under_load_on_postgres(work: Path) -> None:
    run("kill-postgres", work)


@pytest.mark.timeout(SOAK_TIMEOUT)
def test_postgres_stopped_immediately_under_load(work: Path) -> None:
    run("pg-restart", work, cycles=max(1, CYCLES - 1))


@pytest.mark.timeout(SOAK_TIMEOUT)
def test_three_brokers_behind_haproxy_one_killed_at_a_time(work: Path) -> None:
    run("haproxy", work)


@pytest.mark.timeout(SOAK_TIMEOUT)
def test_disk_full_under_a_sqlite_broker(work: Path) -> None:
    """503 while full, /healthz 503 store_unwritable, nothing acknowledged lost, normal
    service once space is freed. Needs root to mount a small tmpfs; skips otherwise (the
    manual check is in docs/SOAK.md)."""
    report = run("disk-full", work, cycles=1)
    assert report.acknowledged > 0


def test_the_checks_catch_loss_double_storage_disorder_and_gaps() -> None:
    """The soaks' verdicts are only worth something if the checks can fail: fed a store that
    lost, doubled and reordered messages, and groups that skipped one and got one twice,
    they count each."""
    stored = [(0, "p0-0"), (1, "p0-2"), (2, "p0-1"), (3, "p1-0"), (4, "p1-0")]
    acked = {0: [[0, 0], [1, 1], [2, 1], [3, 5]], 1: [[0, 3]]}
    report = soak.Report("synthetic")
    soak.check_store(report, stored, acked)
    assert (report.acknowledged, report.lost, report.stored_twice) == (5, 1, 1)
    # p0-1 after p0-2, and p1-0's second copy (not after the first).
    assert report.stored_out_of_order == 2
    # p0-1 acknowledged at offset 1, which holds p0-2.
    assert report.wrong_offset == 1
    soak.check_group(report, "g", ["0 p0-0", "1 p0-2", "0 p0-0", "1 p0-2", "3 p1-0"], stored)
    assert report.delivered_twice["g"] == 2
    assert report.group_out_of_order["g"] == 1  # 3 came right after 1
    assert report.group_missing["g"] == 2  # offsets 2 and 4
    assert len(report.problems()) == 6

    clean = soak.Report("clean")
    fine = [(0, "p0-0"), (1, "p1-0"), (2, "p0-1")]
    soak.check_store(clean, fine, {0: [[0, 0], [1, 2]], 1: [[0, 1]]})
    soak.check_group(clean, "g", ["0 p0-0", "1 p1-0", "1 p1-0", "2 p0-1"], fine)
    assert clean.problems() == []
    assert clean.delivered_twice["g"] == 1
