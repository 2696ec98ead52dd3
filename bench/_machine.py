"""What a bench report records about where it ran: the machine and the code."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["code_version", "machine"]


def machine() -> dict[str, Any]:
    """The machine the numbers come from: cores this process may use, CPU, memory."""
    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    memory = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    return {
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_count": os.cpu_count(), "cpu_model": model, "memory_gib": memory,
        "python": platform.python_version(), "platform": platform.platform(),
        # The loop actually running (uvloop falls back to asyncio when missing).
        "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
    }


def code_version() -> dict[str, Any]:
    """The commit measured (and whether the tree had changes), and the libraries' versions."""
    root = Path(__file__).resolve().parent.parent

    def git(*argv: str) -> str | None:
        try:
            done = subprocess.run(["git", *argv], cwd=root, capture_output=True, text=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    versions = {}
    for package in ("aiokafka", "aiohttp", "faust-streaming", "uvloop", "orjson"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {"commit": git("rev-parse", "--short", "HEAD"), "dirty": bool(git("status", "--porcelain")),
            "packages": versions}
