"""Looking for "the 2x mode" (docs/performance.md): the seed's training step timed in N fresh
processes, one after another, with what each process saw of its threads and of the machine.

Each process builds the seed model the way ``facefold bench`` does (its workload code: the
preset's config, SYNTHETIC faces, batches held in memory, the trainer's compile), runs
``--warmup`` untimed and ``--steps`` timed steps, and prints one row: s/step, the process's
CPU seconds per step (both cores busy = 2 x s/step), threads that worked, context switches,
run-queue wait (time a thread was ready but not running, from ``/proc/*/schedstat``), the
host's steal time over the run (``/proc/stat``), cgroup throttling when there is a cgroup
limit, and how fast a fixed pure-Python loop ran on each vCPU just before and after the steps
(``spin0``/``spin1``, ms: a slow vCPU shows there, whatever TensorFlow does). ``--detail``
adds each working thread: name, CPU seconds, run-queue wait, CPU it last ran on.

Variants (``--variants``, cycled round-robin so that a slow stretch of the machine hits
them alike): ``base`` (what ``facefold bench`` runs), ``intra2inter1`` (TensorFlow's pools
set to 2 intra-op and 1 inter-op thread), ``omp1`` (``OMP_NUM_THREADS=1``), ``onednn0``
(``TF_ENABLE_ONEDNN_OPTS=0``), ``pinned`` (after the warm-up every thread of the process is
pinned to one vCPU, alternately), ``onecore`` (the process confined to vCPU 0 with one
intra-op thread), ``matmul`` (a NumPy float32 matrix product loop instead of TensorFlow),
``spin`` (the pure-Python loop on vCPU 0 alone, on vCPU 1 alone, then on both at once in two
processes: if both at once are much slower than each alone, the two vCPUs share a core),
``retrace`` (after the first timing, :data:`RETRACES` new training graphs in the same
process, each timed), ``autotune`` (tf.data's autotuning switched back on for the batches
in memory, as before facefold switched it off), ``pipeline`` (the real input pipeline,
``step_batches``, as ``facefold train`` and bench's pipeline row feed ``model.fit``, with
tf.data's autotuning switched back on), ``pipeline-untuned`` (the same as facefold runs
it, without autotuning)::

    python docs/examples/mode_probe.py --processes 12 [--variants base,intra2inter1] [--detail]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SPIN_LOOPS = 2_000_000  # about 60 ms of one core's pure-Python integer work
VARIANTS: dict[str, dict[str, str]] = {  # environment of each variant's process
    "base": {}, "intra2inter1": {}, "omp1": {"OMP_NUM_THREADS": "1"},
    "onednn0": {"TF_ENABLE_ONEDNN_OPTS": "0"}, "pinned": {}, "onecore": {},
    "matmul": {}, "spin": {}, "retrace": {},
    "autotune": {}, "pipeline": {}, "pipeline-untuned": {},
}
RETRACES = 3  # the ``retrace`` variant: new training graphs timed after the first


# --------------------------------------------------------------------------- what the OS saw

def spin_ms(cpu: int | None = None) -> float:
    """Milliseconds of :data:`SPIN_LOOPS` iterations of a pure-Python loop, the calling thread
    pinned to ``cpu`` for it (its affinity restored afterwards)."""
    saved = os.sched_getaffinity(0)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})  # 0 = the calling thread only
    start = time.perf_counter()
    total = 0
    for i in range(SPIN_LOOPS):
        total += i & 7
    ms = (time.perf_counter() - start) * 1000
    os.sched_setaffinity(0, saved)
    return ms


def machine_counters() -> dict[str, Any]:
    """Steal ticks of every CPU (``/proc/stat``) and the cgroup's throttling, if limited."""
    steal = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu"):
            fields = line.split()
            steal[fields[0]] = int(fields[8])
    out: dict[str, Any] = {"steal": steal}
    try:
        stat = dict(line.split() for line in
                    Path("/sys/fs/cgroup/cpu.stat").read_text().splitlines())
        out["throttled_usec"] = int(stat.get("throttled_usec", 0))
        out["nr_throttled"] = int(stat.get("nr_throttled", 0))
    except OSError:
        pass
    return out


def threads_now() -> dict[int, dict[str, Any]]:
    """Every thread of this process: name, CPU seconds, run-queue wait, switches, last CPU."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            run_ns, wait_ns, _ = (int(v) for v in (task / "schedstat").read_text().split())
            status = dict(line.split(":\t", 1) for line in
                          (task / "status").read_text().splitlines() if ":\t" in line)
        except OSError:  # the thread ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()  # fields from the 3rd on
        out[int(task.name)] = {
            "name": name, "cpu_s": run_ns / 1e9, "wait_s": wait_ns / 1e9,
            "ticks": (int(fields[11]) + int(fields[12])) / tick,
            "last_cpu": int(fields[36]),
            "vol": int(status["voluntary_ctxt_switches"]),
            "invol": int(status["nonvoluntary_ctxt_switches"]),
            "affinity": sorted(os.sched_getaffinity(int(task.name))),
        }
    return out


def observed(before: dict[str, Any], after: dict[str, Any], wall: float) -> dict[str, Any]:
    """What changed between two snapshots (``machine``, ``threads``, ``rusage``)."""
    tb, ta = before["threads"], after["threads"]
    threads = []
    for tid, a in ta.items():
        b = tb.get(tid, {"cpu_s": 0.0, "wait_s": 0.0, "vol": 0, "invol": 0})
        cpu = a["cpu_s"] - b["cpu_s"]
        if cpu > 0.01 * wall:  # threads that worked during the run
            threads.append({"tid": tid, "name": a["name"], "cpu_s": round(cpu, 3),
                            "wait_s": round(a["wait_s"] - b["wait_s"], 3),
                            "vol": a["vol"] - b["vol"], "invol": a["invol"] - b["invol"],
                            "last_cpu": a["last_cpu"], "affinity": a["affinity"]})
    mb, ma = before["machine"], after["machine"]
    tick = os.sysconf("SC_CLK_TCK")
    ru_b, ru_a = before["rusage"], after["rusage"]
    return {
        "wall_s": wall, "threads_total": len(ta), "threads_working": threads,
        "cpu_s": sum(t["cpu_s"] for t in threads),
        "wait_s": sum(t["wait_s"] for t in threads),
        "vol": ru_a.ru_nvcsw - ru_b.ru_nvcsw, "invol": ru_a.ru_nivcsw - ru_b.ru_nivcsw,
        "steal_s": {c: (ma["steal"][c] - mb["steal"][c]) / tick for c in ma["steal"]},
        "throttled_usec": ma.get("throttled_usec", 0) - mb.get("throttled_usec", 0),
        "affinity": sorted(os.sched_getaffinity(0)), "pid": os.getpid(),
        "omp_libraries": sorted({Path(line.split()[-1]).name for line in
                                 Path("/proc/self/maps").read_text().splitlines()
                                 if "omp" in line.rsplit("/", 1)[-1]}),
    }


def snapshot() -> dict[str, Any]:
    return {"machine": machine_counters(), "threads": threads_now(),
            "rusage": resource.getrusage(resource.RUSAGE_SELF)}


# --------------------------------------------------------------------------- one process

def tf_process(variant: str, data: Path, steps: int, warmup: int) -> dict[str, Any]:
    """The seed's compute-only training step (facefold.bench's workload), timed here."""
    from facefold.machine import apply_onednn_choice, set_tf_threads

    apply_onednn_choice()  # as the facefold command does: the choice measured here
    set_tf_threads({"intra2inter1": 2, "onecore": 1}.get(variant, 0))
    import tensorflow as tf

    if variant == "intra2inter1":
        tf.config.threading.set_inter_op_parallelism_threads(1)
    from facefold.bench.workload import batches_in_memory, bench_config, load_data
    from facefold.data.pipeline import batch_maker, step_batches
    from facefold.models.cnn import build_model
    from facefold.train.optim import compile_model

    cfg = bench_config("seed", None, 128)
    split, classes = load_data(data, cfg.model)
    model = build_model(cfg.model, classes, "float32", cfg.train.seed)
    compile_model(model, cfg)
    make_batch = batch_maker(split, cfg.augment, cfg.model.crop_size, 128, cfg.train.seed,
                             classes)
    def tuned(dataset: tf.data.Dataset) -> tf.data.Dataset:
        """``dataset`` with tf.data's autotuning back on (facefold turns it off)."""
        options = tf.data.Options()
        options.autotune.enabled = True
        return dataset.with_options(options)

    batches = batches_in_memory(make_batch)
    if variant == "autotune":
        batches = tuned(batches)
    fit = dict(epochs=1, shuffle=False, verbose=0)
    if variant.startswith("pipeline"):  # the input pipeline, as training feeds model.fit
        again = tuned if variant == "pipeline" else lambda d: d
        model.fit(again(step_batches(make_batch, 0, warmup)), steps_per_epoch=warmup, **fit)
        batches = again(step_batches(make_batch, warmup, warmup + steps))
    else:
        model.fit(batches, steps_per_epoch=warmup, **fit)
    if variant == "pinned":  # every thread TensorFlow made, pinned to one vCPU, alternately
        cpus = sorted(os.sched_getaffinity(0))
        for i, tid in enumerate(sorted(int(t.name) for t in Path("/proc/self/task").iterdir())):
            os.sched_setaffinity(tid, {cpus[i % len(cpus)]})
    spin = [spin_ms(0), spin_ms(1)] if variant != "onecore" else [spin_ms(0), 0.0]
    before = snapshot()
    start = time.perf_counter()
    model.fit(batches, steps_per_epoch=steps, **fit)
    wall = time.perf_counter() - start
    after = snapshot()
    spin += [spin_ms(0), spin_ms(1)] if variant != "onecore" else [spin_ms(0), 0.0]
    retraced = []
    for _ in range(RETRACES if variant == "retrace" else 0):  # a new graph, same process
        model.make_train_function(force=True)
        model.fit(batches, steps_per_epoch=warmup, **fit)
        start = time.perf_counter()
        model.fit(batches, steps_per_epoch=steps, **fit)
        retraced.append(round((time.perf_counter() - start) / steps, 3))
    return {"retraced_s_step": retraced, "s_step": wall / steps, "spin_ms": spin,
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", ""),
            **observed(before, after, wall)}


def matmul_process(steps: int) -> dict[str, Any]:
    """NumPy's float32 1024² matrix product (OpenBLAS, its default threads), ``steps`` x 8."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
    for _ in range(4):
        a @ a
    spin = [spin_ms(0), spin_ms(1)]
    before = snapshot()
    start = time.perf_counter()
    for _ in range(8 * steps):
        a @ a
    wall = time.perf_counter() - start
    after = snapshot()
    spin += [spin_ms(0), spin_ms(1)]
    return {"s_step": wall / (8 * steps), "spin_ms": spin, **observed(before, after, wall)}


def child(args: argparse.Namespace) -> None:
    if args.variant == "matmul":
        out = matmul_process(args.steps)
    elif args.variant == "spin-one":
        out = {"spin_ms": [spin_ms(args.cpu) for _ in range(args.steps)]}
    else:
        out = tf_process(args.variant, args.data, args.steps, args.warmup)
    print(json.dumps(out))


# --------------------------------------------------------------------------- the driver

def run_child(variant: str, args: argparse.Namespace, extra: list[str] | None = None
              ) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **VARIANTS.get(variant, {})}
    command = [sys.executable, __file__, "--child", variant, "--data", str(args.data),
               "--steps", str(args.steps), "--warmup", str(args.warmup), *(extra or [])]
    if variant == "onecore":
        command = ["taskset", "-c", "0", *command]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)


def result(process: subprocess.Popen) -> dict[str, Any]:
    stdout, _ = process.communicate()
    if process.returncode:
        raise SystemExit(f"a probe process failed (exit {process.returncode})")
    return json.loads(stdout.strip().splitlines()[-1])


def spin_round(args: argparse.Namespace) -> str:
    """The loop on vCPU 0 alone, vCPU 1 alone, then both at once (two processes)."""
    rounds = ["--cpu", "0"], ["--cpu", "1"]
    alone = [statistics.median(result(run_child("spin-one", args, r))["spin_ms"])
             for r in rounds]
    together = [run_child("spin-one", args, r) for r in rounds]
    both = [statistics.median(result(p)["spin_ms"]) for p in together]
    return (f"spin ms alone cpu0 {alone[0]:.1f} cpu1 {alone[1]:.1f}; together cpu0 "
            f"{both[0]:.1f} cpu1 {both[1]:.1f} (together/alone {both[0] / alone[0]:.2f}, "
            f"{both[1] / alone[1]:.2f})")


def row(variant: str, r: dict[str, Any]) -> str:
    steal = sum(v for k, v in r["steal_s"].items() if k != "cpu")
    spin = "/".join(f"{v:.0f}" for v in r["spin_ms"])
    return (f"{variant:<12} {r['s_step']:.3f} s/step  cpu {r['cpu_s'] / r['wall_s']:.2f} cores "
            f"({r['cpu_s'] / (r['wall_s'] / r['s_step']):.3f} cpu-s/step)  threads "
            f"{len(r['threads_working'])}/{r['threads_total']}  rq-wait {r['wait_s']:.2f} s  "
            f"csw {r['vol']}+{r['invol']}inv  steal {steal:.2f} s  "
            f"throttled {r['throttled_usec'] / 1e6:.2f} s  spin0/1 before,after {spin} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=12, help="per variant")
    parser.add_argument("--variants", default="base", help=f"of {', '.join(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--detail", action="store_true", help="each working thread too")
    parser.add_argument("--json", type=Path, help="every process's numbers, as JSON lines")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.variant = args.child
        return child(args)
    variants = args.variants.split(",")
    if unknown := set(variants) - set(VARIANTS):
        raise SystemExit(f"unknown variant(s) {', '.join(sorted(unknown))}: "
                         f"choose from {', '.join(VARIANTS)}")
    from facefold.machine import cpu_model

    print(f"machine: {cpu_model()}, {os.cpu_count()} vCPUs, affinity "
          f"{sorted(os.sched_getaffinity(0))}; load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="mode-probe-") as tmp:
        args.data = Path(tmp) / "data"
        subprocess.run([sys.executable, "-c", "from pathlib import Path; from facefold.bench."
                        "workload import synthetic_dataset; synthetic_dataset(Path("
                        f"{tmp!r}), 128, print)"], check=True, stderr=subprocess.DEVNULL,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        times: dict[str, list[float]] = {v: [] for v in variants}
        for i in range(args.processes):
            for variant in variants:
                if variant == "spin":
                    print(f"{i + 1:>2} {spin_round(args)}", flush=True)
                    continue
                r = result(run_child(variant, args))
                times[variant].append(r["s_step"])
                print(f"{i + 1:>2} {row(variant, r)}", flush=True)
                if r.get("retraced_s_step"):
                    print(f"   same process, new training graphs: {r['retraced_s_step']} s/step")
                if args.detail:
                    for t in r["threads_working"]:
                        name = t["name"] + ("*" if t["tid"] == r["pid"] else "")
                        print(f"     {t['tid']:>7} {name:<12} cpu {t['cpu_s']:.2f} s  wait "
                              f"{t['wait_s']:.2f} s  csw {t['vol']}+{t['invol']}  last cpu "
                              f"{t['last_cpu']}  affinity {t['affinity']}")
                if args.json:
                    with args.json.open("a") as f:
                        f.write(json.dumps({"variant": variant, **r}) + "\n")
    print(f"load average {os.getloadavg()}")
    for variant, seconds in times.items():
        if seconds:
            print(f"{variant:<12} s/step over {len(seconds)} processes: min {min(seconds):.3f} "
                  f"median {statistics.median(seconds):.3f} max {max(seconds):.3f}  "
                  f"(max/min {max(seconds) / min(seconds):.2f})")


if __name__ == "__main__":
    main()
