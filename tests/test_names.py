"""Names checked in one place: reserved words, paths, length, Unicode NFC, for every way a
name enters (person folders, labels.txt, enroll); hidden folders listed as skipped."""

from __future__ import annotations

import re
import signal
import unicodedata
from pathlib import Path

import pytest
from conftest import write_image_tree

from facefold.cli import main
from facefold.data import records
from facefold.data.build import build_dataset
from facefold.predict.predictor import UNKNOWN

PEOPLE = {"ann": 4, "ben": 4, "cy": 4}
BUILD = {"shards": 2, "per_class": 4, "size": 16, "seed": 0, "log": lambda _: None}
ZOE_NFC, ZOE_NFD = "Zo\u00eb", "Zoe\u0308"  # the same name, one ë or e + combining diaeresis


@pytest.mark.parametrize(
    ("name", "problem"),
    [("unknown", "recognizer's answer for a stranger"),
     ("Unknown", "recognizer's answer for a stranger"),
     ("UNKNOWN", "recognizer's answer for a stranger"),
     (".", "is a path"), ("..", "is a path"),
     ("../x", "path separator"), ("/etc/passwd", "path separator"), ("a/b", "path separator"),
     ("a\\b", "path separator"),
     ("x" * 101, "is 101 characters long (at most 100)"),
     (ZOE_NFD, f"not in Unicode normal form NFC (NFC spells it {ZOE_NFC!r}")],
)
def test_a_name_that_hijacks_is_not_a_label(name: str, problem: str) -> None:
    assert problem in (records.label_name_problem(name) or "")


@pytest.mark.parametrize("name", ["x" * 100, "unknowns", "an unknown man", ZOE_NFC, "a.b",
                                  "...x"])
def test_names_near_the_rules_are_labels(name: str) -> None:
    assert records.label_name_problem(name) is None


def test_the_reserved_word_is_what_the_recognizer_answers() -> None:
    assert records.UNKNOWN is UNKNOWN  # one source for the word


def test_nfd_folder_names_become_nfc_labels(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_image_tree(src, {**PEOPLE, ZOE_NFD: 4})
    manifest = build_dataset(src, tmp_path / "ds", **BUILD)
    labels = records.read_labels(tmp_path / "ds")
    assert ZOE_NFC in labels and ZOE_NFD not in labels
    assert sorted(labels) == sorted(manifest["people"]) == sorted([*PEOPLE, ZOE_NFC])


def test_two_spellings_of_one_name_are_refused_naming_both(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    src = tmp_path / "src"
    write_image_tree(src, {**PEOPLE, ZOE_NFC: 4})
    write_image_tree(src, {ZOE_NFD: 4}, seed=1)
    if len({p.name for p in src.iterdir()}) < 5:
        pytest.skip("this file system stores names normalised: the two folders are one")
    assert main(["dataset", "build", str(src), "--out", str(tmp_path / "ds"), "--per-class",
                 "4", "--shards", "2", "--size", "16"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "one name spelled two ways" in err
    assert repr(ZOE_NFC) in err and repr(ZOE_NFD) in err
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("name", ["unknown", "UNKNOWN", "x" * 101])
def test_a_reserved_or_overlong_folder_name_is_refused(tmp_path: Path, name: str) -> None:
    src = tmp_path / "src"
    write_image_tree(src, {**PEOPLE, name: 4})
    with pytest.raises(ValueError, match=re.escape(repr(name))):
        build_dataset(src, tmp_path / "ds", **BUILD)
    assert not (tmp_path / "ds").exists()


def test_labels_file_not_in_nfc_is_refused_naming_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text(f"ann\n{ZOE_NFD}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'labels.txt'} line 2: ")
                       + ".*NFC"):
        records.read_labels(tmp_path)
    (tmp_path / "labels.txt").write_text(f"ann\n{unicodedata.normalize('NFC', ZOE_NFD)}\n",
                                         encoding="utf-8")
    assert records.read_labels(tmp_path) == ["ann", ZOE_NFC]


def test_labels_file_with_unknown_is_refused(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("ann\nunknown\n", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'labels.txt'} line 2: ")):
        records.read_labels(tmp_path)


def test_hidden_person_folders_are_listed_as_skipped(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_image_tree(src, {**PEOPLE, ".dee": 4, ".git": 1})
    lines: list[str] = []
    manifest = build_dataset(src, src / "ds", **{**BUILD, "log": lines.append})
    assert manifest["hidden_folders"] == [".dee", ".git"]  # not the build's own ds folder
    assert sorted(manifest["people"]) == sorted(PEOPLE)
    said = [line for line in lines if "hidden folder" in line]
    assert said == ["2 hidden folders skipped, not people (names start with a dot): .dee, .git"]


def test_no_hidden_folder_no_line(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_image_tree(src, PEOPLE)
    lines: list[str] = []
    manifest = build_dataset(src, tmp_path / "ds", **{**BUILD, "log": lines.append})
    assert manifest["hidden_folders"] == [] and not any("hidden folder" in line for line in lines)


# ---------------------------------------------------------------- CSV cells


@pytest.mark.parametrize(
    ("cell", "written"),
    [("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"), ("+1+2", "'+1+2"),
     ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"), ("\t=1", "'\t=1"), ("\r=1", "'\r=1"),
     ("-x.png", "'-x.png"), ("ann", "ann"), ("a=b", "a=b"), ("", ""),
     ("-0.2500", "-0.2500"), ("+3", "+3"), ("-1e-05", "-1e-05"),  # plain numbers stay numbers
     ("-inf", "'-inf"), ("- 1", "'- 1"),
     (-0.25, -0.25), (3, 3), (None, None)],
)
def test_a_formula_cell_is_written_as_text(cell: object, written: object) -> None:
    from facefold.csvcells import safe_cell

    assert safe_cell(cell) == written


def test_identify_and_per_person_csv_cells_are_safe(tmp_path: Path) -> None:
    import csv

    import numpy as np

    from facefold.evaluate.errors import Predictions
    from facefold.recognizer import identify_csv
    from facefold.report.errors import write_per_person_csv

    rows = [{"file": "-x.png", "box": [1.0, 2.0, 3.0, 4.0], "name": "=cmd|' /C calc'!A0",
             "known": True, "score": -0.25, "threshold": -1.5,
             "top": [{"name": "@SUM(A1)", "probability": 0.5}], "top_kind": "probability"}]
    read = next(csv.DictReader(identify_csv(rows).splitlines()))
    assert (read["file"], read["name"], read["top"]) == (
        "'-x.png", "'=cmd|' /C calc'!A0", "'@SUM(A1):0.500")
    assert (read["x"], read["score"], read["threshold"]) == ("1.0", "-0.2500", "-1.5000")

    names = ["=1+1", "@SUM(A1)", "ann"]
    probabilities = np.eye(3)[[1, 1, 2]]  # person 0 taken for person 1, the others right
    predictions = Predictions(names, np.array([0, 1, 2]), probabilities, [tmp_path], [3])
    write_per_person_csv(predictions, tmp_path / "per_person.csv")
    table = list(csv.reader((tmp_path / "per_person.csv").open()))
    assert table[1:] == [["'=1+1", "1", "0", "0.000000", "'@SUM(A1)", "1"],
                         ["'@SUM(A1)", "1", "1", "1.000000", "", "0"],
                         ["ann", "1", "1", "1.000000", "", "0"]]


def test_evaluate_csv_cells_are_safe(tmp_path: Path) -> None:
    import csv
    from types import SimpleNamespace

    from facefold.evaluate.generalization import write_rows_csv

    rows = [{"file": "=a/1.png", "person": "@x", "answer": "+y", "score": -0.5, "right": False}]
    assert write_rows_csv(SimpleNamespace(rows=lambda: rows), tmp_path / "rows.csv") == 1
    assert list(csv.reader((tmp_path / "rows.csv").open()))[1] == [
        "'=a/1.png", "'@x", "'+y", "-0.5", "False"]


# ---------------------------------------------------------------- clean errors


def test_a_fifo_is_refused_naming_it_never_opened_for_a_wait(tmp_path: Path) -> None:
    """`predict` and `identify` on a FIFO: without the check, opening it waits for a writer
    forever; the subprocess's timeout turns that hang into a failure."""
    import os
    import subprocess
    import sys

    from facefold.data.images import ImageError, load_rgb

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    code = ("import sys\nfrom facefold.data.images import ImageError, load_rgb\n"
            "try:\n    load_rgb(sys.argv[1])\nexcept ImageError as err:\n    print(err)\n")
    done = subprocess.run([sys.executable, "-c", code, str(fifo)], capture_output=True,
                          text=True, timeout=60)
    assert done.stdout == f"{fifo}: a FIFO (named pipe), not a picture file; nothing was read " \
                          "from it\n", done.stderr
    with pytest.raises(ImageError, match=re.escape(f"{tmp_path}: a folder, not a picture")):
        load_rgb(tmp_path)
    with pytest.raises(ImageError, match="/dev/zero: a character device, not a picture"):
        load_rgb("/dev/zero")


def _timed_out(signum: int, frame: object) -> None:
    raise TimeoutError("still waiting on the FIFO after 30 s")


def test_predict_and_identify_report_a_fifo_and_go_on(predictor, tmp_path: Path) -> None:
    import os

    from PIL import Image

    from facefold.predict import predict_files

    fifo, good = tmp_path / "pipe.png", tmp_path / "face.png"
    os.mkfifo(fifo)
    Image.new("RGB", (40, 40), (200, 120, 90)).save(good)
    signal.signal(signal.SIGALRM, _timed_out)
    signal.alarm(30)  # opening the FIFO would wait for a writer forever
    try:
        results = predict_files(predictor, [fifo, good])
    finally:
        signal.alarm(0)
    assert results[0]["error"].startswith(f"{fifo}: a FIFO (named pipe), not a picture file")
    assert results[1]["error"] is None and len(results[1]["faces"]) == 1


@pytest.mark.parametrize("command", ["predict", "verify"])
@pytest.mark.parametrize("threshold", ["nan", "inf", "-inf"])
def test_a_threshold_that_is_not_a_number_is_refused(
    predictor, tmp_path: Path, capsys: pytest.CaptureFixture, command: str, threshold: str
) -> None:
    from PIL import Image

    face = tmp_path / "face.png"
    Image.new("RGB", (40, 40), (200, 120, 90)).save(face)
    model = str(predictor.info.source)
    argv = ([command, model, str(face)] if command == "predict"
            else [command, model, str(face), str(face), "--crops"])
    # verify's error status is 2 (1 means "different people"); predict's is 1.
    assert main([*argv, f"--threshold={threshold}"]) == (2 if command == "verify" else 1)
    err = capsys.readouterr().err
    assert err == f"facefold: error: threshold must be a finite number, got {float(threshold)}\n"


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--port", "70000"], "port must be in 1-65535, got 70000"),
     (["--port", "0"], "port must be in 1-65535, got 0"),
     (["--port=-1"], "port must be in 1-65535, got -1"),
     (["--max-upload-mb=-1"], "the upload limit must be a positive number of MB, got -1.0"),
     (["--max-upload-mb", "0"], "the upload limit must be a positive number of MB, got 0.0"),
     (["--max-upload-mb", "nan"], "the upload limit must be a positive number of MB, got nan")],
)
def test_serve_refuses_a_bad_port_or_upload_limit_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, flags: list[str], message: str
) -> None:
    pytest.importorskip("fastapi")
    assert main(["serve", str(tmp_path / "no-model"), *flags]) == 1  # checked before loading
    assert capsys.readouterr().err == f"facefold: error: {message}\n"
