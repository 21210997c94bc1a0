"""``facefold faces crop`` (needs facefold[faces]) and ``faces cluster`` (facefold[dlib])."""

from __future__ import annotations

import argparse
from pathlib import Path

from facefold.cli.options import add_out


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``faces crop`` and ``faces cluster``."""
    faces = commands.add_parser("faces", help="find and align faces in photos")
    faces_commands = faces.add_subparsers(dest="faces_command", required=True)
    crop = faces_commands.add_parser(
        "crop", help="photos -> aligned face crops, same folder layout (e.g. one per person)"
    )
    crop.add_argument("photos", type=Path, metavar="PHOTOS", help="folder of photos (recursive)")
    add_out(crop, "folder for the crops", legacy_positional=True)
    crop.add_argument("--size", type=int, default=112,
                      help="side of the square crops in pixels (default 112)")
    crop.add_argument("--multiple", choices=["largest", "all"], default="largest",
                      help="photos with several faces: keep the largest (default) or all")
    crop.add_argument("--min-score", type=float, default=0.9,
                      help="detector confidence needed to count as a face (default 0.9)")
    # MTCNN runs in NumPy: nothing of crop's needs TensorFlow, whose start takes seconds
    # (docs/performance.md, "Start-up of the deploy commands").
    crop.set_defaults(func=_cmd_faces_crop, starts_tensorflow=False)
    _add_faces_cluster(faces_commands)


def _cmd_faces_crop(args: argparse.Namespace) -> None:
    from facefold.faces.crop import crop_faces

    crop_faces(args.photos, args.out, args.size, args.multiple, args.min_score)


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
    add_out(cluster, "folder for the groups, contact sheet and report")
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
