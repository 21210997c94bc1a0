"""The ``facefold`` command: a thin shell over the Python API.

Each subcommand parses its arguments and calls one library function; errors
a user can act on are printed as one line and exit with status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from facefold import __version__
from facefold.machine import apply_onednn_choice

# Quiet TensorFlow's C++ start-up chatter unless the user asked for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

THREADS_HELP = "TensorFlow intra-op threads (default 0 = one per core)"


class _DeprecatedAlias(argparse.Action):
    """A hidden old spelling of an option: prints a one-line notice, then stores into ``dest``."""

    def __init__(self, option_strings: list[str], dest: str, new: str, **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                         **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        _warn_deprecated(option_string or self.dest, self.new)
        setattr(namespace, self.dest, values)


def _warn_deprecated(old: str, new: str) -> None:
    print(f"facefold: warning: {old} is deprecated, use {new} (the old spelling will be "
          "removed in the next release)", file=sys.stderr)


def _alias(parser: argparse.ArgumentParser, old: str, new: argparse.Action) -> None:
    """Keep ``old`` working as a hidden, deprecated spelling of the option ``new``."""
    parser.add_argument(old, dest=new.dest, type=new.type, action=_DeprecatedAlias,
                        new=new.option_strings[0])


def _add_out(parser: argparse.ArgumentParser, help: str, legacy_positional: bool = False) -> None:
    """``--out DIR``, the output folder, required. ``legacy_positional`` also accepts the old
    positional OUT (deprecated; :func:`parse_args` checks that one of the two is given)."""
    if not legacy_positional:
        parser.add_argument("--out", type=Path, required=True, help=help)
        return
    parser.add_argument("legacy_out", type=Path, nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=f"{help} (required)")
    parser.set_defaults(out_parser=parser)


def _resolve_legacy_out(args: argparse.Namespace) -> None:
    """Accept the old positional OUT where ``--out`` replaced it; require one of the two."""
    parser = getattr(args, "out_parser", None)
    if parser is None:
        return
    if args.legacy_out is not None:
        if args.out is not None:
            parser.error("give the output folder once, as --out OUT")
        _warn_deprecated("the positional OUT", "--out OUT")
        args.out = args.legacy_out
    elif args.out is None:
        parser.error("the following arguments are required: --out")


def _add_folds(parser: argparse.ArgumentParser) -> None:
    """``--folds``: which shards are held out, one case each (cv and experiment)."""
    parser.add_argument("--folds", default="all",
                        help="held-out shards, one case each: 'all' (default) or e.g. 0 or 0,3 "
                        "(significance over folds needs at least 2)")


def _add_config_args(parser: argparse.ArgumentParser, preset: bool = True) -> None:
    """Options shared by every command that trains: preset, TOML file, common overrides.

    ``preset=False`` leaves out ``--preset`` (for commands that take several presets).
    """
    group = parser.add_argument_group("model and training (defaults < preset < --config < flags)")
    if preset:
        group.add_argument("--preset", help="registered preset (see `facefold presets`); "
                           "default seed")
    group.add_argument("--config", type=Path, help="TOML file with [model]/[augment]/[train]")
    group.add_argument("--steps", type=int, help="training steps (seed preset: 8000)")
    group.add_argument("--eval-every", type=int, help="evaluate and checkpoint every N steps")
    group.add_argument("--batch-size", type=int, help="training batch size (default 128)")
    group.add_argument("--learning-rate", type=float, help="(peak) learning rate (seed: 1e-3)")
    group.add_argument("--seed", type=int, help="fixes data order, augmentation and init")
    group.add_argument(
        "--precision", choices=["auto", "float32", "bfloat16"],
        help="auto (default) = time both on this machine once and keep the faster (cached)",
    )


def _train_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]] | None:
    """The ``[train]`` flags given on the command line, as config overrides (None if none)."""
    train: dict[str, Any] = {}
    for flag, key in (
        ("steps", "steps"), ("eval_every", "eval_every"), ("batch_size", "batch_size"),
        ("learning_rate", "learning_rate"), ("seed", "seed"), ("precision", "precision"),
    ):
        if getattr(args, flag) is not None:
            train[key] = getattr(args, flag)
    return {"train": train} if train else None


def _config_from_args(args: argparse.Namespace):
    from facefold.models.presets import resolve_config

    return resolve_config(args.preset, args.config, _train_overrides(args))


def _add_restart_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--restart", action="store_true",
                        help="discard runs in --out made from other data or another config and "
                        "train them again (without it they are refused; runs of the same data "
                        "and config are resumed or reused either way)")


def _add_executor_args(parser: argparse.ArgumentParser) -> None:
    """Where the trials of cv/experiment run: locally one by one, or as parallel Ray tasks."""
    group = parser.add_argument_group("execution")
    group.add_argument("--executor", choices=["local", "ray"], default="local",
                       help="local: one trial after another; ray: one Ray task per trial")
    group.add_argument("--address", help="Ray address: none = embedded single-machine Ray, "
                       "'auto' or ray://host:10001 = a cluster started with `ray start`")
    group.add_argument("--cpus-per-trial", type=float, default=1)
    group.add_argument("--gpus-per-trial", type=float, default=0)


def _executor_from_args(args: argparse.Namespace):
    from facefold.evaluate.executor import Executor

    return Executor(args.executor, args.address, args.cpus_per_trial, args.gpus_per_trial)


def _cmd_dataset_build(args: argparse.Namespace) -> None:
    from facefold.data.build import build_dataset

    build_dataset(
        args.src, args.out, shards=args.shards, per_class=args.per_class, size=args.size,
        seed=args.seed, overwrite=args.overwrite, near_duplicates=args.near_dup_distance,
        spare=args.spare,
    )


def _cmd_dataset_inspect(args: argparse.Namespace) -> None:
    from facefold.data.inspect import format_report, inspect_dataset

    montage = args.montage or Path(args.data) / "montage.png"
    report = inspect_dataset(args.data, montage=montage)
    print(format_report(report))
    print(f"All checks passed. Montage: {montage}")


def _cmd_train(args: argparse.Namespace) -> None:
    from facefold.train import train

    eval_shards = [int(k) for k in args.folds.split(",")]
    rows = train(args.data, _config_from_args(args), args.out, eval_shards,
                 restart=args.restart)
    print(f"final held-out accuracy at step {rows[-1]['step']}: {rows[-1]['eval_accuracy']:.4f}")


def _cmd_cv(args: argparse.Namespace) -> None:
    if args.unknown_people:  # open-set evaluation: see facefold.evaluate.openset
        _cmd_cv_open_set(args)
        return
    from facefold.evaluate.cv import run_cv
    from facefold.report import report_cv

    result = run_cv(args.data, _config_from_args(args), args.out, args.folds,
                    executor=_executor_from_args(args), restart=args.restart)
    print(report_cv(result, args.out))


def _cmd_experiment(args: argparse.Namespace) -> None:
    from facefold.evaluate.experiment import run_experiment
    from facefold.report.comparison import save_comparison
    from facefold.report.errors import save_error_report

    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    result = run_experiment(args.data, presets, args.out, args.folds, _train_overrides(args),
                            args.config, executor=_executor_from_args(args),
                            baseline=args.baseline, restart=args.restart)
    print(save_comparison(result, args.out))
    for summary in result.summaries:  # per preset: per_person.csv, confusion.png, errors.png
        save_error_report(Path(args.out) / summary.preset)
    print(f"Error analysis of each preset in {Path(args.out)}/<preset>/ "
          "(per_person.csv, confusion.png, errors.png)")
    _write_report([args.out], args.out)


def _write_report(dirs: list[Path], out: Path) -> None:
    from facefold.report.document import write_report

    markdown, html = write_report(dirs, out)
    print(f"Report: {markdown} and {html} (self-contained)")


def _cmd_report(args: argparse.Namespace) -> None:
    _write_report(args.dirs, args.out or args.dirs[0])


def _cmd_analyze_sparsity(args: argparse.Namespace) -> None:
    from facefold.report.sparsity import analyze_sparsity

    out = args.out
    if out is not None and out.suffix.lower() == ".png":  # the old meaning: the file itself
        _warn_deprecated("--out FILE.png", "--out DIR (writes DIR/sparsity.png)")
    elif out is not None:
        out = out / "sparsity.png"
    print(analyze_sparsity(args.runs, out))


def _cmd_analyze_errors(args: argparse.Namespace) -> None:
    from facefold.report.errors import save_error_report

    print(save_error_report(args.folder, args.out))


def _cmd_analyze_activations(args: argparse.Namespace) -> None:
    from facefold.report.activations import analyze_activations, format_activations

    print(format_activations(analyze_activations(args.run, args.image, args.out)))


def _cmd_demo(args: argparse.Namespace) -> None:
    from facefold.demo import run_demo

    run_demo(args.out)


def _cmd_presets(args: argparse.Namespace) -> None:
    from facefold.models.presets import describe_preset, list_presets

    names = list_presets()
    width = max(len(name) for name in names)
    for name in names:
        print(f"{name:{width}s}  {describe_preset(name)}")


def _cmd_bench(args: argparse.Namespace) -> None:
    from facefold.bench import (
        bench_embedding,
        bench_model,
        format_bench,
        format_bench_embedding,
        format_bench_model,
        format_profile,
        profile_training,
        run_bench,
    )
    from facefold.data.records import write_json_atomic

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
                       args.timed_steps, args.warmup, args.data, args.threads, rounds=args.rounds,
                       peer=args.peer)
    print(format_bench(result))
    path = args.out / "bench.json" if args.out else getattr(args, "legacy_json", None)
    if path:
        write_json_atomic(path, result)
        print(f"Wrote {path}")


def _cmd_cv_open_set(args: argparse.Namespace) -> None:
    from facefold import runs
    from facefold.evaluate.cv import load_cv
    from facefold.evaluate.openset_cv import run_open_set_cv
    from facefold.report import save_cv_report

    if getattr(args, "executor", "local") != "local":
        raise ValueError("--unknown-people runs its cases locally: leave out --executor")
    result = run_open_set_cv(args.data, _config_from_args(args), args.out, args.folds,
                             args.unknown_people, args.far, restart=args.restart)
    print(save_cv_report(load_cv(args.out), args.out))
    print(result.table())
    print(f"Wrote {Path(args.out) / runs.OPENSET_FILE}; each case's threshold is used by "
          "`facefold predict`")


def _cmd_predict(args: argparse.Namespace) -> None:
    import json

    from facefold.predict import Predictor, format_results, predict_files

    predictor = Predictor.load(args.model)
    results = predict_files(predictor, args.images, args.top_k, args.detect, args.threshold,
                            args.score)
    print(json.dumps(results, indent=2) if args.json else format_results(results))
    if any(r["error"] for r in results):
        raise SystemExit(1)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    import json

    from facefold.evaluate.generalization import (
        evaluate_model,
        write_evaluation,
        write_rows_csv,
    )
    from facefold.evaluate.heldout import InferenceOptions

    tta = True if args.tta else False if args.no_tta else None

    def log(line: str) -> None:  # progress on stderr: stdout holds the result (or its JSON)
        print(line, file=sys.stderr)

    crops = True if args.tta_crops else None
    result = evaluate_model(args.model, args.data,
                            InferenceOptions(tta, not args.no_ema, crops), log)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.text())
    if args.out:
        log(f"Wrote {write_evaluation(result, args.out)}")
    if args.csv:
        log(f"Wrote {write_rows_csv(result, args.csv)} row(s) to {args.csv}")


def _cmd_fit(args: argparse.Namespace) -> None:
    import json

    from facefold.fit import fit, measure_enrollment

    if args.enrollment_test:
        result = measure_enrollment(args.data, _config_from_args(args), args.out,
                                    args.enrollment_test, args.enrollment_test, args.shots,
                                    args.groups, args.far)
        print(json.dumps({k: v for k, v in result.items() if k != "calibration"}, indent=2))
        return
    result = fit(args.data, _config_from_args(args), args.out, args.groups, args.far,
                 restart=args.restart)
    print(f"Model and its card: {result.model_dir}")


def _cmd_enroll(args: argparse.Namespace) -> None:
    from facefold.recognizer import Recognizer, picture_files

    recognizer = Recognizer.load(args.model)
    for folder in args.people:
        count = recognizer.enroll(args.name or folder.name, picture_files([folder]),
                                  detect=not args.crops)
        print(f"enrolled {args.name or folder.name}: {count} picture(s)")


def _cmd_identify(args: argparse.Namespace) -> None:
    import json

    from facefold.recognizer import Recognizer, identify_csv, write_identify_csv

    rows = Recognizer.load(args.model).identify(args.pictures, args.top_k, not args.crops)
    if args.csv:
        write_identify_csv(rows, args.csv)
        print(f"Wrote {len(rows)} row(s) to {args.csv}")
    else:
        print(json.dumps(rows, indent=2) if args.json else identify_csv(rows), end="")
    if any(row.get("error") for row in rows):
        raise SystemExit(1)


def _cmd_verify(args: argparse.Namespace) -> None:
    import json

    from facefold.recognizer import Recognizer

    result = Recognizer.load(args.model).verify(args.a, args.b, not args.crops, args.threshold)
    verdict = "same person" if result.same else "different people"
    print(json.dumps(result.to_dict()) if args.json else
          f"{verdict}: similarity {result.similarity:.4f} "
          f"{'>=' if result.same else '<'} threshold {result.threshold:.4f}")


def _cmd_export(args: argparse.Namespace) -> None:
    from facefold.export import export_run

    print(f"Wrote {export_run(args.run, args.format, args.out)} ({args.format})")


def _cmd_serve(args: argparse.Namespace) -> None:
    from facefold.serve import require_server_packages, serve

    try:
        require_server_packages()  # the `serve` extra: say what to install, not a traceback
    except RuntimeError as err:
        raise SystemExit(f"facefold: error: {err}") from None
    serve(args.model, args.host, args.port, args.max_upload_mb, allow_enroll=args.allow_enroll)


def _add_recognize_commands(commands: argparse._SubParsersAction) -> None:
    """``predict``, ``export`` and ``serve``: use a trained model."""
    predict = commands.add_parser("predict", help="name the people in pictures")
    predict.add_argument("model", type=Path, metavar="MODEL",
                         help="run folder (e.g. OUT/case-0) or `facefold export` folder")
    predict.add_argument("images", type=Path, nargs="+", metavar="IMAGE")
    predict.add_argument("--top-k", type=int, default=5, help="names per face (default 5)")
    predict.add_argument("--detect", action="store_true",
                         help="find every face in each photo (else each picture is one crop)")
    predict.add_argument("--json", action="store_true", help="print JSON")
    predict.add_argument("--threshold", type=float,
                         help="answer 'unknown' below this score (default: the model's own "
                         "threshold.json, if any)")
    predict.add_argument("--score", choices=["msp", "max_logit", "energy", "cosine"],
                         help="open-set score the threshold applies to (default: the one in "
                         "the model's threshold.json, else energy)")
    predict.set_defaults(func=_cmd_predict)

    _add_evaluate_command(commands)

    export = commands.add_parser("export", help="bundle a run as a self-contained model")
    export.add_argument("run", type=Path, metavar="RUN", help="run folder")
    export.add_argument("--format", choices=["keras", "savedmodel", "tflite"], default="keras")
    export.add_argument("--out", type=Path, required=True, help="new export folder")
    export.set_defaults(func=_cmd_export)

    serve = commands.add_parser("serve", help="web page and JSON API to recognize faces")
    serve.add_argument("model", type=Path, metavar="MODEL", help="run folder or export folder")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max-upload-mb", type=float, default=10,
                       help="largest accepted upload (default 10 MB; larger -> HTTP 413)")
    serve.add_argument("--allow-enroll", action="store_true",
                       help="add an enroll form and POST /api/enroll?name=NAME, which add the "
                       "photo's face to the model folder's gallery (writes to MODEL)")
    serve.set_defaults(func=_cmd_serve)


def _add_evaluate_command(commands: argparse._SubParsersAction) -> None:
    """``evaluate``: a trained model measured again, with other options or on other pictures."""
    evaluate = commands.add_parser(
        "evaluate", help="a finished run on its held-out shards with other inference options, "
        "or any model on a labeled folder it never saw; accuracy with a 95 %% interval")
    evaluate.add_argument("model", type=Path, metavar="MODEL",
                          help="run folder (e.g. OUT/case-0), `facefold fit` folder or export")
    evaluate.add_argument("data", type=Path, nargs="?", metavar="DATA",
                          help="labeled pictures it never saw: a dataset folder (shards) or "
                          "one sub-folder of face crops per person (default: the run's own "
                          "held-out shards)")
    tta = evaluate.add_mutually_exclusive_group()
    tta.add_argument("--tta", action="store_true",
                     help="flip test-time augmentation on (default: as the run was trained)")
    tta.add_argument("--no-tta", action="store_true", help="flip test-time augmentation off")
    evaluate.add_argument("--tta-crops", action="store_true",
                          help="a CNN averages 7 windows of each picture (centre crop, 4 "
                          "shifted by 4 px, centre squares 8 px larger and smaller) instead of "
                          "its centre crop alone (model.tta_crops); 7x the inference cost")
    evaluate.add_argument("--no-ema", action="store_true",
                          help="the raw weights of a run trained with a weight average "
                          "(train.ema_decay), not the average")
    evaluate.add_argument("--out", type=Path, help="also write the result to OUT/evaluation.json")
    evaluate.add_argument("--csv", type=Path, help="write one row per picture to this CSV file")
    evaluate.add_argument("--json", action="store_true", help="print JSON")
    evaluate.set_defaults(func=_cmd_evaluate)


def _add_deploy_commands(commands: argparse._SubParsersAction) -> None:
    """``fit``, ``enroll``, ``identify`` and ``verify``: a recognizer to deploy."""
    fit = commands.add_parser("fit", help="train on every shard and calibrate 'unknown': a "
                              "model to deploy, with its model card")
    fit.add_argument("data", type=Path, help="dataset folder (data-NN.tfrecords)")
    fit.add_argument("--out", type=Path, required=True, help="model folder (resumes if present)")
    fit.add_argument("--groups", type=int, default=4,
                     help="leave-people-out groups for the calibration (each trains one more "
                     "model without its people, an ensemble one per member; default 4)")
    fit.add_argument("--far", type=float, default=0.01,
                     help="share of strangers the threshold accepts (default 0.01)")
    fit.add_argument("--enrollment-test", type=int, default=0, metavar="N",
                     help="measure instead: leave N people out to enroll and N more as "
                     "strangers, fit on the rest, enroll each from --shots pictures and "
                     "report how many of their other pictures are named right")
    fit.add_argument("--shots", type=int, default=5, help="pictures per enrolled person in "
                     "--enrollment-test (default 5)")
    _add_config_args(fit)
    _add_restart_arg(fit)
    fit.set_defaults(func=_cmd_fit)

    enroll = commands.add_parser("enroll", help="add people from a few photos, no retraining")
    enroll.add_argument("model", type=Path, metavar="MODEL", help="a `facefold fit` folder")
    enroll.add_argument("people", type=Path, nargs="+", metavar="PERSON_DIR",
                        help="one folder of photos per person, named after them")
    enroll.add_argument("--name", help="the person's name (default: the folder's name)")
    enroll.add_argument("--crops", action="store_true",
                        help="the pictures are face crops: take them whole, detect nothing")
    enroll.set_defaults(func=_cmd_enroll)

    identify = commands.add_parser("identify", help="name every face in photos (files or "
                                   "folders), one row per face")
    identify.add_argument("model", type=Path, metavar="MODEL")
    identify.add_argument("pictures", type=Path, nargs="+", metavar="PICTURE")
    identify.add_argument("--csv", type=Path, help="write the rows to this CSV file")
    identify.add_argument("--json", action="store_true", help="print JSON instead of CSV")
    identify.add_argument("--top-k", type=int, default=5, help="names per face (default 5)")
    identify.add_argument("--crops", action="store_true",
                          help="the pictures are face crops: take them whole, detect nothing")
    identify.set_defaults(func=_cmd_identify)

    verify = commands.add_parser("verify", help="are two photos the same person?")
    verify.add_argument("model", type=Path, metavar="MODEL")
    verify.add_argument("a", type=Path, metavar="A")
    verify.add_argument("b", type=Path, metavar="B")
    verify.add_argument("--threshold", type=float,
                        help="similarity threshold (default: the model's calibrated one)")
    verify.add_argument("--json", action="store_true", help="print JSON")
    verify.add_argument("--crops", action="store_true",
                        help="the pictures are face crops: take them whole, detect nothing")
    verify.set_defaults(func=_cmd_verify)


def _cmd_faces_crop(args: argparse.Namespace) -> None:
    from facefold.faces.crop import crop_faces

    crop_faces(args.photos, args.out, args.size, args.multiple, args.min_score)


def _add_faces_commands(commands: argparse._SubParsersAction) -> None:
    """``faces crop``: aligned face crops from ordinary photos (needs facefold[faces])."""
    faces = commands.add_parser("faces", help="find and align faces in photos")
    faces_commands = faces.add_subparsers(dest="faces_command", required=True)
    crop = faces_commands.add_parser(
        "crop", help="photos -> aligned face crops, same folder layout (e.g. one per person)"
    )
    crop.add_argument("photos", type=Path, metavar="PHOTOS", help="folder of photos (recursive)")
    _add_out(crop, "folder for the crops", legacy_positional=True)
    crop.add_argument("--size", type=int, default=112,
                      help="side of the square crops in pixels (default 112)")
    crop.add_argument("--multiple", choices=["largest", "all"], default="largest",
                      help="photos with several faces: keep the largest (default) or all")
    crop.add_argument("--min-score", type=float, default=0.9,
                      help="detector confidence needed to count as a face (default 0.9)")
    crop.set_defaults(func=_cmd_faces_crop)
    _add_faces_cluster(faces_commands)


def _cmd_faces_cluster(args: argparse.Namespace) -> None:
    from facefold.faces.cluster import cluster_faces

    cluster_faces(args.photos, args.out, args.method, args.threshold, args.min_size, args.size,
                  args.min_score, args.crops, args.overwrite, args.labels_from_folders)


def _add_faces_cluster(faces_commands: argparse._SubParsersAction) -> None:
    """``faces cluster``: unlabeled photos -> one folder per person (needs facefold[dlib])."""
    cluster = faces_commands.add_parser(
        "cluster", help="unlabeled photos -> one folder of faces per person, to name by hand"
    )
    cluster.add_argument("photos", type=Path, metavar="PHOTOS", help="folder of photos (recursive)")
    _add_out(cluster, "folder for the groups, contact sheet and report")
    cluster.add_argument("--method", choices=["chinese-whispers", "average"],
                         default="chinese-whispers",
                         help="Chinese whispers (default) or average-linkage clustering")
    cluster.add_argument("--threshold", type=float,
                         help="cosine distance below which faces join (default: the method's, "
                         "0.0625 or 0.085, measured on celeb21 and ORL)")
    cluster.add_argument("--min-size", type=int, default=2,
                         help="smaller groups go to unassigned/ (default 2)")
    cluster.add_argument("--size", type=int, default=112,
                         help="side of the square crops in pixels (default 112)")
    cluster.add_argument("--min-score", type=float, default=0.9,
                         help="detector confidence needed to count as a face (default 0.9)")
    cluster.add_argument("--crops", action="store_true",
                         help="every picture is a face crop already: no detection, taken whole")
    cluster.add_argument("--overwrite", action="store_true",
                         help="replace an earlier `faces cluster` output in OUT")
    cluster.add_argument("--labels-from-folders", action="store_true",
                         help="score the groups against PHOTOS/<person>/ folder names, which "
                         "the clustering never sees (ARI, purity, completeness)")
    cluster.set_defaults(func=_cmd_faces_cluster)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``facefold`` command."""
    parser = argparse.ArgumentParser(
        prog="facefold", description="Train and cross-validate face-identification CNNs."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
    commands = parser.add_subparsers(dest="command", required=True)

    dataset = commands.add_parser("dataset", help="build or check TFRecord shards")
    dataset_commands = dataset.add_subparsers(dest="dataset_command", required=True)
    build = dataset_commands.add_parser("build", help="face folders -> balanced shards")
    build.add_argument("src", type=Path, help="folder with one sub-folder of images per person")
    _add_out(build, "output folder for data-NN.tfrecords, labels.txt, manifest.json",
             legacy_positional=True)
    build.add_argument("--shards", type=int, default=6,
                       help="number of shards, which is the number of folds of `cv` (default 6)")
    build.add_argument("--per-class", type=int, default=180,
                       help="images kept per person: people with fewer are left out, people "
                       "with more are sampled down to it (default 180)")
    build.add_argument("--size", type=int, default=112,
                       help="side of the square crops in pixels (default 112)")
    build.add_argument("--seed", type=int, default=0,
                       help="fixes which images are kept and the shard of each (default 0)")
    build.add_argument("--overwrite", action="store_true", help="replace existing shards in OUT")
    build.add_argument("--near-dup-distance", type=int, default=16, metavar="BITS",
                       help="drop pictures whose 256-bit perceptual hash is within BITS of an "
                       "earlier kept one (default 16; measured on face crops: edited copies "
                       "mostly <= 16, other photos >= 20); 0 = off")
    build.add_argument("--spare", type=Path, metavar="DIR",
                       help="also write the kept people's pictures that --per-class sampling "
                       "left out to DIR (new or empty), one sub-folder per person: pictures no "
                       "shard holds, for `facefold evaluate MODEL DIR`")
    build.set_defaults(func=_cmd_dataset_build)
    inspect = dataset_commands.add_parser("inspect", help="check shards, print counts, montage")
    inspect.add_argument("data", type=Path)
    inspect.add_argument("--montage", type=Path, help="PNG path (default DATA/montage.png)")
    inspect.set_defaults(func=_cmd_dataset_inspect)

    train = commands.add_parser("train", help="train on some shards, evaluate on others")
    train.add_argument("data", type=Path, help="dataset folder (data-NN.tfrecords)")
    folds = train.add_argument("--folds", default="0",
                               help="shard(s) held out of this one run and evaluated on, e.g. 0 "
                               "(default) or 0,1")
    _alias(train, "--eval-shards", folds)
    _add_out(train, "run folder (resumes if present)")
    _add_config_args(train)
    _add_restart_arg(train)
    train.set_defaults(func=_cmd_train)

    cv = commands.add_parser("cv", help="K-fold cross-validation over the shards")
    cv.add_argument("data", type=Path)
    _add_folds(cv)
    _add_out(cv, "output folder: one case-K run folder per fold (resumes if present)")
    _add_config_args(cv)
    _add_executor_args(cv)
    cv.add_argument("--unknown-people", type=int, default=0, metavar="K",
                    help="open set: hold K people (chosen with --seed) out of training and "
                    "measure how well the model answers 'unknown' for them")
    cv.add_argument("--far", type=float, default=0.05,
                    help="with --unknown-people: false-accept rate on unknowns for the threshold")
    _add_restart_arg(cv)
    cv.set_defaults(func=_cmd_cv)

    experiment = commands.add_parser(
        "experiment", help="cross-validate several presets and compare them with a baseline",
        allow_abbrev=False,  # `--preset` must not silently mean `--presets`
    )
    experiment.add_argument("data", type=Path)
    experiment.add_argument("--presets", required=True,
                            help="comma-separated presets, e.g. seed,reduced,grayscale,size64 "
                            "(the baseline is always added)")
    experiment.add_argument("--baseline", default="seed",
                            help="preset the others are tested against (default seed, the 2016 "
                            "model; e.g. fast to see what each of its ablations changes)")
    _add_folds(experiment)
    _add_out(experiment, "output folder: one CV folder per preset (resumes if present)")
    _add_config_args(experiment, preset=False)
    _add_executor_args(experiment)
    _add_restart_arg(experiment)
    experiment.set_defaults(func=_cmd_experiment)

    analyze = commands.add_parser("analyze", help="look inside trained runs")
    analyze_commands = analyze.add_subparsers(dest="analyze_command", required=True)
    sparsity = analyze_commands.add_parser(
        "sparsity", help="ReLU sparsity curves of runs; live units of the dense layers"
    )
    sparsity.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run folder(s)")
    sparsity.add_argument("--out", type=Path,
                          help="folder for sparsity.png (default: the first RUN)")
    sparsity.set_defaults(func=_cmd_analyze_sparsity)
    activations = analyze_commands.add_parser(
        "activations", help="every conv channel's output on one image; dead channels"
    )
    activations.add_argument("run", type=Path, help="run folder (its newest checkpoint is used)")
    activations.add_argument("image", type=Path, help="a face picture (any format Pillow reads)")
    activations.add_argument(
        "--out", type=Path, help="output folder (default RUN/analysis/activations)"
    )
    activations.set_defaults(func=_cmd_analyze_activations)
    errors = analyze_commands.add_parser(
        "errors", help="per-person accuracy, confusion matrix and misclassified crops"
    )
    errors.add_argument("folder", type=Path, help="cv folder, experiment preset folder or run")
    errors.add_argument("--out", type=Path, help="output folder (default FOLDER)")
    errors.set_defaults(func=_cmd_analyze_errors)

    report = commands.add_parser(
        "report", help="one Markdown + self-contained HTML report of cv/experiment folders"
    )
    report.add_argument("dirs", type=Path, nargs="+", metavar="DIR",
                        help="`facefold cv` or `facefold experiment` output folder(s), one dataset")
    report.add_argument("--out", type=Path, help="where report.md, report.html and "
                        "report_assets/ go (default: the first DIR)")
    report.set_defaults(func=_cmd_report)

    demo = commands.add_parser("demo", help="short cross-validation on SYNTHETIC faces")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"))
    demo.set_defaults(func=_cmd_demo)

    presets = commands.add_parser("presets", help="list the registered presets")
    presets.set_defaults(func=_cmd_presets)

    bench = commands.add_parser("bench", help="time training, evaluation and prediction")
    bench.add_argument("--preset", default="seed", help="registered preset (default seed)")
    bench.add_argument("--precision", choices=["auto", "float32", "bfloat16"],
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
    _alias(bench, "--size", bench.add_argument(
        "--input-size", type=int, help="override the preset's model.input_size"))
    _alias(bench, "--batch", bench.add_argument(
        "--batch-size", type=int, default=128, help="training batch size (default 128)"))
    _alias(bench, "--steps", bench.add_argument(
        "--timed-steps", type=int, default=30, help="timed training steps, after --warmup "
        "(default 30)"))
    bench.add_argument("--warmup", type=int, default=5,
                       help="untimed training steps first (default 5)")
    bench.add_argument("--rounds", type=int, default=2,
                       help="alternations of compute-only and pipeline timings; the best "
                            "of each counts (more resist load bursts)")
    bench.add_argument("--data", type=Path, help="dataset folder (default: SYNTHETIC faces)")
    bench.add_argument("--model", type=Path, help="time this model folder naming face crops "
                       "(per face, the whole path) instead of training a preset")
    bench.add_argument("--tta-crops", action="store_true", help="with --model: a CNN run "
                       "reads 7 windows of each picture (model.tta_crops)")
    bench.add_argument("--out", type=Path, help="also write the result to OUT/bench.json")
    bench.add_argument("--json", dest="legacy_json", type=Path, action=_DeprecatedAlias,
                       new="--out DIR (writes DIR/bench.json)")
    bench.set_defaults(func=_cmd_bench)
    _add_recognize_commands(commands)
    _add_deploy_commands(commands)
    _add_faces_commands(commands)
    for _, command in iter_commands(parser):  # --threads before or after the subcommand
        command.add_argument("--threads", type=int, default=argparse.SUPPRESS, help=THREADS_HELP)
    return parser


def iter_commands(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every subcommand parser below ``parser`` with its words, e.g. ``("dataset", "build")``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                yield (*words, name), command
                yield from iter_commands(command, (*words, name))


# Commands that train: when this machine has no measured oneDNN choice yet, they time one.
TRAINING_COMMANDS = frozenset({"train", "cv", "experiment", "fit", "demo", "bench"})


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a ``facefold`` command line (without the program name) as :func:`main` does."""
    args = build_parser().parse_args(argv)
    _resolve_legacy_out(args)
    return args


def _set_threads(threads: int) -> None:
    if threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``facefold`` command; returns the exit status."""
    args = parse_args(argv)
    # Before TensorFlow starts (_set_threads starts it): oneDNN on or off as measured here;
    # commands that train time it when this machine has no choice yet.
    apply_onednn_choice(measure=args.command in TRAINING_COMMANDS,
                        log=lambda line: print(f"facefold: {line}", file=sys.stderr))
    _set_threads(args.threads)
    try:
        args.func(args)
    # ModuleNotFoundError: an optional extra is missing; its message says what to install.
    except (ValueError, FileNotFoundError, FileExistsError, FloatingPointError,
            RuntimeError, ModuleNotFoundError) as err:
        print(f"facefold: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("facefold: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
