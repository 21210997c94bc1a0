"""Choosing the numeric precision: bfloat16 where the hardware computes it natively.

Also what the CPU is (flags, model name), read from ``/proc/cpuinfo``.
"""

from __future__ import annotations

from pathlib import Path

# CPU flags (as in /proc/cpuinfo) that mean native bfloat16 matrix math.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


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


def gpu_supports_bfloat16() -> bool:
    """True when TensorFlow sees a GPU of compute capability 8.0 or newer."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability and capability >= (8, 0):
            return True
    return False


def resolve_precision(
    requested: str, flags: set[str] | None = None, gpu_bf16: bool | None = None
) -> tuple[str, str]:
    """Resolve ``auto|float32|bfloat16`` to ``float32`` or ``bfloat16`` and say why.

    ``flags`` and ``gpu_bf16`` default to this machine's; tests pass fakes.
    Returns ``(precision, reason)``.
    """
    if requested in ("float32", "bfloat16"):
        return requested, "requested"
    if requested != "auto":
        raise ValueError(f"precision must be auto, float32 or bfloat16, got {requested!r}")
    if gpu_bf16 is None:
        gpu_bf16 = gpu_supports_bfloat16()
    if gpu_bf16:
        return "bfloat16", "auto: GPU with bfloat16 support"
    flags = cpu_flags() if flags is None else flags
    native = [f for f in BF16_CPU_FLAGS if f in flags]
    if native:
        return "bfloat16", f"auto: CPU has native bfloat16 ({', '.join(native)})"
    return "float32", "auto: no native bfloat16 on this CPU or GPU"
