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


def apt_install(packages: list[str]) -> str:
    """Installs Debian packages; returns "" or why it could not."""
    if os.geteuid() != 0:
        return f"not root: run `apt-get install {' '.join(packages)}` as root"
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine"
    steps = [
        ["apt-get", *APT_LOCK, "update", "-qq"],
        ["apt-get", *APT_LOCK, "install", "-y", "-qq", "--no-install-recommends", *packages],
    ]
    for step in steps:
        done = subprocess.run(
            step, env=APT_ENV, capture_output=True, text=True, timeout=1200, check=False
        )
        if done.returncode != 0:
            return f"`{' '.join(step)}` failed: {done.stderr.strip()[-300:]}"
    return ""


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
        missing = [p for p in packages if not apt_candidate(p)]
        failure = (
            apt_install([p for p in packages if p not in missing])
            if len(missing) < len(packages)
            else ""
        )
        for s in systems:
            for probe, pkg in s.debian:
                if pkg in missing:
                    unavailable[s.name] = f"Debian offers no {pkg} here"
                elif not present(probe):
                    unavailable[s.name] = failure or f"{pkg} installed but {probe} is missing"
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
