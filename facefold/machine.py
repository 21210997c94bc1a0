"""What machine this is, and the settings measured on it.

* CPU model and flags, usable cores, GPU bfloat16 support: every timing facefold prints
  names the machine it was measured on with these, read from ``/proc/cpuinfo`` and the
  process's CPU affinity, never assumed.
* The user cache (:func:`default_cache_dir`), where what was measured once is kept.
* Whether TensorFlow runs its oneDNN kernels (:func:`apply_onednn_choice`): timed once per
  machine, applied before TensorFlow starts. This module imports no TensorFlow until asked
  to start it (:func:`start_tensorflow`, :func:`set_tf_threads`).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from facefold.atomic import write_text_atomic

T = TypeVar("T")


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


def start_tensorflow() -> ModuleType:
    """Import TensorFlow; without a line on standard error when ``TF_CPP_MIN_LOG_LEVEL`` asks
    for quiet (1 or more, as the ``facefold`` command sets it unless ``--verbose``).

    TensorFlow's C++ start-up lines (oneDNN, CPU instructions, "All log messages before
    absl::InitializeLog()") are written while it loads, before it reads its log level, so
    only pointing the process's standard error elsewhere for the import hides them; its
    Python warnings (tf.function retracing notices) are kept to errors. Also the initializer
    of worker processes, which would print the same lines.
    """
    with quiet_native_start():
        import tensorflow as tf
    if not _verbose():
        tf.get_logger().setLevel("ERROR")
    return tf


def _verbose() -> bool:
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") in ("", "0")


@contextmanager
def quiet_native_start() -> Iterator[None]:
    """Inside the block, file descriptor 2 (where C++ code writes) points to /dev/null, unless
    ``TF_CPP_MIN_LOG_LEVEL`` is 0 (``--verbose``): what hides TensorFlow's start-up lines and
    the LiteRT interpreter's ("Created TensorFlow Lite XNNPACK delegate")."""
    if _verbose():
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def set_tf_threads(threads: int) -> None:
    """Run TensorFlow's ops on ``threads`` intra-op threads (0 = TensorFlow's default, one per
    core). Possible only before TensorFlow's first op: ``ValueError`` afterwards, unless the
    count asked for is already in force.

    The thread count is part of what a training computes, not only of its speed: matrix
    products and convolutions split their sums by thread, so 1 and 2 threads round
    differently and a run's weights drift apart over hundreds of steps.
    """
    # More threads than a few per core is never faster, and TensorFlow hangs starting 100,000.
    most = 16 * usable_cores()
    if not 0 <= threads <= most:
        raise ValueError(f"--threads must be 0 (one per core) to {most} (16 per core here), "
                         f"got {threads}")
    tf = start_tensorflow()
    if not threads or tf.config.threading.get_intra_op_parallelism_threads() == threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
    except RuntimeError as err:
        raise ValueError(
            f"threads={threads} must be set before TensorFlow starts (use `facefold --threads`)"
        ) from err


def in_new_process(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` run in a new Python process (spawned: this one may hold
    TensorFlow's thread pools, which do not survive a fork), and its result. What timings
    use to be independent of this process's state: a process sometimes runs all its steps
    at half speed (docs/performance.md, "The 2x mode"), so each timed model gets its own."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def tf_threads() -> int:
    """The intra-op thread count this process's TensorFlow computes with: the one set by
    :func:`set_tf_threads`, else TensorFlow's default of one per usable core."""
    import tensorflow as tf

    return tf.config.threading.get_intra_op_parallelism_threads() or usable_cores()


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


# --------------------------------------------------------------------------- the user cache

CACHE_ENV = "FACEFOLD_CACHE"


def default_cache_dir() -> Path:
    """Where facefold keeps what it measured or computed once for this user: embeddings, the
    precision and oneDNN choices. ``$FACEFOLD_CACHE``, else ``$XDG_CACHE_HOME/facefold``, else
    ``~/.cache/facefold``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "facefold"


def read_cache_file(path: Path) -> dict:
    """A JSON object of the user cache (choices keyed by what they depend on); a missing,
    unreadable or foreign file counts as empty: what it held is measured again."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def add_to_cache_file(path: Path, key: str, entry: dict) -> str | None:
    """Add ``entry`` under ``key`` to the cache file atomically (re-read first: another process
    may have added entries meanwhile); returns why it could not be saved, else None."""
    cache = read_cache_file(path)
    cache[key] = entry
    try:
        write_text_atomic(path, json.dumps(cache, indent=1, sort_keys=True) + "\n")
    except OSError as err:  # a read-only cache: the choice holds for this process only
        return str(err)
    return None


# --------------------------------------------------------------------------- oneDNN

# TensorFlow's oneDNN kernels are on by default only on CPUs with AVX-512 VNNI/BF16 or AMX; on
# an AVX2-only AMD EPYC they made a seed training step much faster (docs/performance.md,
# "2-vCPU AMD EPYC without AVX-512"), on others they may not. So facefold times both settings
# once per machine and TensorFlow version and sets the faster before TensorFlow starts (see
# apply_onednn_choice).
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
ONEDNN_CACHE_FILE = "onednn.json"
ONEDNN_MARGIN = 0.03  # "on" must win by this much: otherwise TensorFlow's default stays
ONEDNN_PROBE_BATCH = 32  # a seed step at batch 32: seconds per setting on a 2-core VM


def onednn_setting() -> str:
    """``TF_ENABLE_ONEDNN_OPTS`` as this process has it ("" = TensorFlow's own default)."""
    return os.environ.get(ONEDNN_ENV, "")


def _tensorflow_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for name in ("tensorflow-cpu", "tensorflow"):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return "unknown"


def onednn_key() -> str:
    """What the oneDNN choice depends on: CPU model and flags, cores, TensorFlow's version."""
    flags = " ".join(sorted(cpu_flags()))
    return json.dumps([cpu_model(), hashlib.sha256(flags.encode()).hexdigest()[:16],
                       usable_cores(), _tensorflow_version()])


def time_onednn(value: str) -> float:
    """Seconds per seed training step (batch 32, random inputs) in a fresh Python process with
    ``TF_ENABLE_ONEDNN_OPTS=value``: the setting is read once, when TensorFlow starts."""
    env = {**os.environ, ONEDNN_ENV: value, "TF_CPP_MIN_LOG_LEVEL": "2"}
    # The step is timed by facefold.train.precision (named, not imported: this module stays
    # below the training code).
    done = subprocess.run([sys.executable, "-m", "facefold.train.precision", "time-step"], env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"timing TensorFlow with {ONEDNN_ENV}={value} failed: "
                           f"{(done.stderr.strip().splitlines() or ['no output'])[-1]}")
    return float(lines[-1])


def apply_onednn_choice(measure: bool = False, log: Callable[[str], None] | None = None,
                        timer: Callable[[str], float] = time_onednn,
                        cache_dir: str | Path | None = None) -> str:
    """Set ``TF_ENABLE_ONEDNN_OPTS`` to the setting measured faster on this machine, unless
    it is set already (yours wins) or TensorFlow has started (too late to change). Without a
    cached choice it times both settings in subprocesses when ``measure`` (about a minute,
    once per machine and TensorFlow version), else leaves TensorFlow's default.

    Returns what was done, for a log line.
    """
    if ONEDNN_ENV in os.environ:
        return f"{ONEDNN_ENV}={os.environ[ONEDNN_ENV]} (set in the environment)"
    if "tensorflow" in sys.modules:
        return "TensorFlow already started: its oneDNN default stays"
    path = Path(cache_dir or default_cache_dir()) / ONEDNN_CACHE_FILE
    key = onednn_key()
    entry = read_cache_file(path).get(key)
    if not (isinstance(entry, dict) and entry.get("value") in ("0", "1")):
        if not measure:
            return "not measured on this machine yet: TensorFlow's oneDNN default"
        if log:
            log(f"timing TensorFlow with and without oneDNN on this machine "
                f"({cpu_model()}), once")
        seconds = {value: timer(value) for value in ("0", "1")}
        faster = "1" if seconds["1"] < seconds["0"] * (1 - ONEDNN_MARGIN) else "0"
        entry = {"value": faster, "seconds": seconds,
                 "measured": datetime.now(UTC).isoformat(timespec="seconds")}
        add_to_cache_file(path, key, entry)
    os.environ[ONEDNN_ENV] = entry["value"]
    seconds = entry.get("seconds") or {}
    timing = (f": {seconds['0']:.3f} s/step without, {seconds['1']:.3f} with"
              if isinstance(seconds.get("0"), float) and isinstance(seconds.get("1"), float)
              else "")
    return f"oneDNN {'on' if entry['value'] == '1' else 'off'} (measured on this machine{timing})"
