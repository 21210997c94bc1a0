"""What machine this is: CPU model and flags, usable cores, GPU bfloat16 support.

Every timing facefold prints names the machine it was measured on with these; the
numbers are read from ``/proc/cpuinfo`` and the process's CPU affinity, never assumed.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags of this machine (empty when they cannot be read)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's marketing name from ``/proc/cpuinfo`` ("unknown CPU" when unreadable)."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def gpu_supports_bfloat16() -> bool:
    """True when TensorFlow sees a GPU of compute capability 8.0 or newer."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability and capability >= (8, 0):
            return True
    return False


def describe() -> str:
    """``<CPU model>, <cores> cores, <UTC date>``: what a timing was measured on, and when."""
    return f"{cpu_model()}, {usable_cores()} cores, {datetime.now(UTC).date().isoformat()}"
