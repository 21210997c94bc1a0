"""``facefold bench``: training, model, embedding or profiled speed on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path

from facefold.choices import PRECISION_SETTINGS
from facefold.cli.options import (
    DeprecatedAlias,
    alias,
)


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``bench``."""
    bench = commands.add_parser("bench", help="time training, evaluation and prediction")
    bench.add_argument("--preset", default="seed", help="registered preset (default seed)")
    bench.add_argument("--precision", choices=PRECISION_SETTINGS,
                       help="time only this one (auto: the one training picks here, timed once "
                       "per machine and model, then cached); default: both side by side")
    bench.add_argument("--no-peer", dest="peer", action="store_false",
                       help="leave out the plain Keras implementation timed beside the model")
    bench.add_argument("--embedding", metavar="NAME",
                       help="time embedding NAME (dlib128) instead: dlib's descriptor and the "
                       "Keras network side by side, one process against one worker per core, "
                       "and one face's cost with and without the mirror view")
    bench.add_argument("--profile", action="store_true",
                       help="where a training step's time goes (TensorFlow's profiler, by op "
                       "type and part of the step) instead of the timings")
    bench.add_argument("--workers", type=int, help="embedding worker processes for "
                       "--embedding (default: one per core)")
    alias(bench, "--size", bench.add_argument(
        "--input-size", type=int, help="override the preset's model.input_size"))
    alias(bench, "--batch", bench.add_argument(
        "--batch-size", type=int, default=128, help="training batch size (default 128)"))
    alias(bench, "--steps", bench.add_argument(
        "--timed-steps", type=int, default=30, help="timed training steps, after --warmup "
        "(default 30)"))
    bench.add_argument("--warmup", type=int, default=5,
                       help="untimed training steps first (default 5)")
    bench.add_argument("--rounds", type=int,
                       help="alternations of compute-only and pipeline timings; the best "
                            "of each counts (more resist load bursts); default 2 (--startup: "
                            "runs of each command, default 3)")
    bench.add_argument("--data", type=Path, help="dataset folder (default: SYNTHETIC faces)")
    bench.add_argument("--model", type=Path, help="time this model folder naming face crops "
                       "(per face, the whole path) instead of training a preset")
    bench.add_argument("--startup", type=Path, metavar="MODEL", help="time the deploy "
                       "commands (--help, verify, identify, predict, serve) on this model folder "
                       "from a cold process, --rounds times each, and where their time goes "
                       "(--data: a folder of face pictures; default synthetic faces)")
    bench.add_argument("--tta-crops", action="store_true", help="with --model: a CNN run "
                       "reads 7 windows of each picture (model.tta_crops)")
    bench.add_argument("--out", type=Path, help="also write the result to OUT/bench.json")
    bench.add_argument("--json", dest="legacy_json", type=Path, action=DeprecatedAlias,
                       new="--out DIR (writes DIR/bench.json)")
    bench.set_defaults(func=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> None:
    from facefold.atomic import write_json_atomic
    from facefold.bench import (
        bench_embedding,
        bench_model,
        bench_startup,
        format_bench,
        format_bench_embedding,
        format_bench_model,
        format_bench_startup,
        format_profile,
        profile_training,
        run_bench,
    )

    if args.startup:
        result = bench_startup(args.startup, args.data,
                               3 if args.rounds is None else args.rounds)
        print(format_bench_startup(result))
        if args.out:
            write_json_atomic(args.out / "bench_startup.json", result)
        return
    if args.model:
        result = bench_model(args.model, args.data, crops=True if args.tta_crops else None)
        print(format_bench_model(result))
        if args.out:
            write_json_atomic(args.out / "bench_model.json", result)
        return
    if args.profile:
        result = profile_training(args.preset, args.precision or "auto", args.timed_steps,
                                  args.warmup, args.batch_size, args.data)
        print(format_profile(result))
        if args.out:
            write_json_atomic(args.out / "profile.json", result)
        return
    if args.embedding:
        result = bench_embedding(args.embedding, args.data, workers=args.workers)
        print(format_bench_embedding(result))
        if args.out:
            write_json_atomic(args.out / "bench_embedding.json", result)
        return
    result = run_bench(args.preset, args.precision or "both", args.input_size, args.batch_size,
                       args.timed_steps, args.warmup, args.data, args.threads,
                       rounds=2 if args.rounds is None else args.rounds,
                       peer=args.peer)
    print(format_bench(result))
    path = args.out / "bench.json" if args.out else getattr(args, "legacy_json", None)
    if path:
        write_json_atomic(path, result)
        print(f"Wrote {path}")
