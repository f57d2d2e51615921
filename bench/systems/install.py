"""Installs what the chosen systems need: servers from Debian, clients from PyPI.

Idempotent: anything already present is left alone, so a second run installs nothing. What
cannot be installed makes its system unavailable, with the reason, instead of failing all.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from . import System

APT_ENV = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
# Other builds on the machine may hold dpkg's lock for a while: wait rather than fail.
APT_LOCK = ["-o", "DPkg::Lock::Timeout=600"]


def present(probe: str) -> bool:
    return Path(probe).exists() if probe.startswith("/") else shutil.which(probe) is not None


def importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def apt_candidate(package: str) -> bool:
    out = subprocess.run(
        ["apt-cache", "policy", package], capture_output=True, text=True, timeout=60, check=False
    ).stdout
    return "Candidate:" in out and "Candidate: (none)" not in out


def apt(*args: str) -> str:
    """Runs apt-get; returns "" or why it failed."""
    done = subprocess.run(
        ["apt-get", *APT_LOCK, *args], env=APT_ENV, capture_output=True, text=True,
        timeout=1200, check=False,
    )  # fmt: skip
    if done.returncode == 0:
        return ""
    return f"`apt-get {' '.join(args)}` failed: {done.stderr.strip()[-300:]}"


def apt_install(packages: list[str]) -> dict[str, str]:
    """Installs Debian packages; returns {package: why it is not installed}."""
    if os.geteuid() != 0:
        why = f"not root: run `apt-get install {' '.join(packages)}` as root"
        return dict.fromkeys(packages, why)
    if shutil.which("apt-get") is None:
        return dict.fromkeys(packages, "no apt-get on this machine")
    failure = apt("update", "-qq")  # before asking for candidates: the lists may be old
    if failure:
        return dict.fromkeys(packages, failure)
    # Not every Debian release has every server (nats-server came with bookworm).
    offered = [p for p in packages if apt_candidate(p)]
    failed = {p: f"Debian offers no {p} here (apt-cache policy {p})" for p in packages}
    if offered:
        failure = apt("install", "-y", "-qq", "--no-install-recommends", *offered)
        failed.update(dict.fromkeys(offered, failure))
    return {p: why for p, why in failed.items() if why}


def pip_install(requirements: list[str]) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            *requirements,
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    importlib.invalidate_caches()
    return "" if done.returncode == 0 else f"pip install failed: {done.stderr.strip()[-300:]}"


def ensure(systems: Iterable[System], install: bool) -> dict[str, str]:
    """Installs what is missing (when install is set); returns {system: why unavailable}."""
    systems = list(systems)
    unavailable: dict[str, str] = {}
    packages = sorted({pkg for s in systems for probe, pkg in s.debian if not present(probe)})
    requirements = sorted(
        {req for s in systems for module, req in s.pypi if req and not importable(module)}
    )
    if packages and install:
        print(f"peers: installing from Debian: {' '.join(packages)}", file=sys.stderr, flush=True)
        failed = apt_install(packages)
        for s in systems:
            for probe, pkg in s.debian:
                if not present(probe):
                    unavailable[s.name] = failed.get(pkg) or f"{pkg} installed, {probe} missing"
    if requirements and install:
        print(f"peers: installing from PyPI: {' '.join(requirements)}", file=sys.stderr, flush=True)
        failure = pip_install(requirements)
        if failure:
            print(f"peers: {failure}", file=sys.stderr)
    for s in systems:
        if s.name in unavailable:
            continue
        for probe, pkg in s.debian:
            if not present(probe):
                unavailable[s.name] = f"{probe} is missing (Debian package {pkg})"
        for module, req in s.pypi:
            if not importable(module):
                unavailable[s.name] = (
                    f"Python module {module} is missing ("
                    + (f"pip install {req}" if req else "pip install . in this repository")
                    + ")"
                )
    return unavailable
