"""``facefold report``: one Markdown and one self-contained HTML report of finished runs.

:func:`write_report` reads cross-validation folders (``cv.json`` + ``case-K/``)
and experiment folders (``experiment.json`` + one CV folder per preset) and writes::

    OUT/report.md          headings, tables and images as relative links
    OUT/report_assets/     every image the report shows (PNG), one sub-folder per CV folder
    OUT/report.html        the same report with every image embedded as a base64 data URI:
                           a single file that opens offline and can be mailed

For each CV folder it shows the table in the 2016 layout with the final mean ±
std, the accuracy curves (full and zoomed), the ReLU sparsity curves of the
cases that measured them, activation grids already made by ``facefold analyze
activations``, the confusion matrix, error gallery and per-person accuracy,
and the config, seed and library versions of its first case. An experiment adds
the comparison of its presets with the p-values against ``seed``. The dataset
montage comes first.

The run and dataset folders are only read: a figure they lack (the montage,
the error analysis) is made inside ``report_assets/``, and the curves are
always redrawn there from ``metrics.jsonl`` so they match the table.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import facefold
from facefold import runs
from facefold.atomic import (
    remove_stale_temporaries,
    restore_interrupted_swap,
    staging_folder,
    swap_in,
    write_text_atomic,
)
from facefold.data.inspect import draw_montage
from facefold.data.records import read_labels
from facefold.evaluate.cv import CVResult, load_cv
from facefold.evaluate.experiment import DEFAULT_BASELINE, compare_presets
from facefold.models.presets import describe_preset
from facefold.report.comparison import format_comparison
from facefold.report.plots import plot_accuracy
from facefold.report.sparsity import final_dense_sparsity, format_live_units, plot_sparsity
from facefold.report.table import format_table

MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"
ASSETS_DIR = "report_assets"
ERROR_FILES = ("per_person.csv", "confusion.png", "errors.png")
ACTIVATIONS_DIR = Path("analysis") / "activations"


# --- the document: a few kinds of block, rendered twice -----------------------------------------


@dataclass(frozen=True)
class Heading:
    level: int  # 1 = title
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str  # `backticks` become code in both renderings


@dataclass(frozen=True)
class Figure:
    path: str  # relative to report_assets/
    caption: str


@dataclass(frozen=True)
class Gallery:
    """Small figures side by side in the HTML; one after another in the Markdown."""

    figures: list[Figure]


@dataclass(frozen=True)
class Code:
    text: str  # preformatted: the printed tables keep their alignment


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Details:
    """Blocks folded away in the HTML (``<details>``); shown in full in the Markdown."""

    summary: str
    blocks: list = field(default_factory=list)


Block = Heading | Paragraph | Figure | Gallery | Code | Table | Details


# --- what the directories hold -------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One DIR of the command line: a CV folder, or an experiment with one CV folder per preset.

    ``cv_dirs`` maps a preset to its CV folder (``{"": DIR}`` for a CV folder);
    ``missing`` lists an experiment's presets that have no ``cv.json`` yet.
    """

    path: Path
    kind: str  # "cv" | "experiment"
    info: dict  # cv.json or experiment.json
    cv_dirs: dict[str, Path]
    missing: list[str] = field(default_factory=list)


def read_source(folder: str | Path) -> Source:
    """Classify ``folder``; ``ValueError`` naming it when it is neither kind of folder."""
    folder = Path(folder)
    if runs.is_cv(folder):
        return Source(folder, "cv", runs.read_cv_info(folder), {"": folder})
    if runs.is_experiment(folder):
        info = runs.read_experiment_info(folder)
        presets = info.get("presets", [])
        ran = {p: runs.preset_dir(folder, p) for p in presets
               if runs.is_cv(runs.preset_dir(folder, p))}
        if not ran:
            raise ValueError(f"{folder}: no preset of the experiment has started yet")
        return Source(folder, "experiment", info, ran, [p for p in presets if p not in ran])
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist")
    raise ValueError(
        f"{folder} is neither a facefold cv folder ({runs.CV_FILE}) nor an experiment folder "
        f"({runs.EXPERIMENT_FILE}); give the --out folder of `facefold cv` or "
        "`facefold experiment`"
    )


def check_one_dataset(sources: Sequence[Source]) -> tuple[Path, list[str]]:
    """``(dataset folder, label names)`` shared by every CV folder of ``sources``.

    Raises ``ValueError`` naming two folders when they differ in label list
    (the label lists of their cases) or dataset (fingerprint, or folder for older runs).
    """
    cv_dirs = [d for s in sources for d in s.cv_dirs.values()]
    reference: tuple[Path, list[str]] | None = None
    for run_dir in (r for d in cv_dirs for r in runs.run_dirs(d)
                    if (r / runs.LABELS_FILE).is_file()):
        labels = read_labels(run_dir)
        if reference is None:
            reference = (run_dir, labels)
        elif labels != reference[1]:
            raise ValueError(
                f"{run_dir}/labels.txt differs from {reference[0]}/labels.txt: one report "
                "covers runs of one label list; write a report per dataset"
            )
    data = {d: runs.data_of(d) for d in cv_dirs}
    first = cv_dirs[0]
    for folder, (digest, data_dir) in data.items():
        same = digest == data[first][0] if digest or data[first][0] else data_dir == data[first][1]
        if not same:
            raise ValueError(
                f"{folder} was made from dataset {data_dir}, but {first} from {data[first][1]} "
                "(other content); one report covers runs of one dataset: write a report per "
                "dataset"
            )
    data_dir = Path(data[first][1])
    if reference is not None:
        return data_dir, reference[1]
    return data_dir, read_labels(data_dir) if (data_dir / runs.LABELS_FILE).is_file() else []


# --- the report ----------------------------------------------------------------------------------


def write_report(dirs: Sequence[str | Path], out: str | Path) -> tuple[Path, Path]:
    """Write ``OUT/report.md``, ``OUT/report.html`` and ``OUT/report_assets/`` for ``dirs``.

    ``dirs`` are CV or experiment folders made from one dataset. Every input
    is checked before anything is written. Returns ``(markdown path, html path)``.
    """
    if not dirs:
        raise ValueError("give at least one cv or experiment folder")
    sources = [read_source(d) for d in dirs]
    data_dir, labels = check_one_dataset(sources)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # Build the assets beside the old ones and swap at the end: a failed report
    # leaves the previous one whole, and no stale image survives a new one.
    assets = out / ASSETS_DIR
    restore_interrupted_swap(assets)
    remove_stale_temporaries(assets)  # left by a killed report
    with staging_folder(assets) as staging:
        blocks = _title_blocks(sources, data_dir, labels)
        blocks += _dataset_blocks(data_dir, staging)
        for index, source in enumerate(sources, start=1):
            slug = f"{index}-{_safe(source.path.resolve().name)}"
            if source.kind == "cv":
                blocks += _cv_section(source, slug, staging)
            else:
                blocks += _experiment_section(source, slug, staging)
        page = render_html(blocks, staging)
        swap_in(staging, assets)
    markdown, html_path = out / MARKDOWN_FILE, out / HTML_FILE
    write_text_atomic(markdown, render_markdown(blocks))
    write_text_atomic(html_path, page)
    return markdown, html_path


def _safe(name: str) -> str:
    """A folder name usable in a file name and a Markdown link."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"


def _title_blocks(sources: Sequence[Source], data_dir: Path, labels: list[str]) -> list[Block]:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    folders = ", ".join(f"`{s.path}` ({s.kind})" for s in sources)
    return [
        Heading(1, "facefold report"),
        Paragraph(f"Made {when} by facefold {facefold.__version__} from {folders}."),
        Paragraph(f"Dataset `{data_dir}`: {len(labels)} people."),
    ]


def _dataset_blocks(data_dir: Path, assets: Path) -> list[Block]:
    """The dataset's montage.png, or one drawn into ``assets`` (the dataset is never written)."""
    blocks: list[Block] = [Heading(2, "Dataset")]
    target = assets / "dataset" / "montage.png"
    note = ""
    if (data_dir / "montage.png").is_file():
        _copy(data_dir / "montage.png", target)
    elif not data_dir.is_dir():
        return [*blocks, Paragraph(f"`{data_dir}` is no longer there: no montage.")]
    else:
        try:
            draw_montage(data_dir, target)  # a picture, not a check: `dataset inspect` checks
        except (FileNotFoundError, ValueError) as err:
            return [*blocks, Paragraph(f"No montage: {err}.")]
    caption = "A few crops of every person (first 50 people), label index and name."
    return [*blocks, Figure("dataset/montage.png", caption), *([Paragraph(note)] if note else [])]


def _experiment_section(source: Source, slug: str, assets: Path) -> list[Block]:
    info = source.info
    presets = list(source.cv_dirs)
    blocks: list[Block] = [
        Heading(2, f"Experiment {source.path.name}"),
        Paragraph(
            f"Folder `{source.path}`. Presets {', '.join(presets)} (baseline "
            f"{_baseline(source)}); folds {', '.join(map(str, info.get('cases', [])))}; "
            f"overrides `{json.dumps(info.get('overrides') or {})}`."
        ),
    ]
    if source.missing:
        blocks.append(Paragraph(f"Not started yet: {', '.join(source.missing)}."))
    blocks += _comparison_blocks(source, slug, assets)
    for preset, cv_dir in source.cv_dirs.items():
        blocks += [Heading(3, f"Preset {preset}"), *_preset_note(preset)]
        blocks += _cv_blocks(cv_dir, f"{slug}-{_safe(preset)}", assets, level=4)
    return blocks


def _baseline(source: Source) -> str:
    """The experiment's baseline preset (folders written before it was recorded used seed)."""
    return source.info.get("baseline", DEFAULT_BASELINE)


def _preset_note(preset: str) -> list[Block]:
    try:
        return [Paragraph(f"Registered as: {describe_preset(preset)}.")]
    except ValueError:  # a preset that is no longer registered: its folder still reports
        return []


def _comparison_blocks(source: Source, slug: str, assets: Path) -> list[Block]:
    """The printed comparison (with p-values) and ``comparison.png``."""
    blocks: list[Block] = [Heading(3, "Comparison with the baseline")]
    try:
        table, explanation = _comparison_table(source)
    except (FileNotFoundError, ValueError) as err:
        return [*blocks, Paragraph(f"No comparison yet ({err}); run the experiment again.")]
    blocks += [Code(table), Paragraph(explanation)]
    png = runs.comparison_paths(source.path)[1]
    if png.is_file():
        _copy(png, assets / slug / png.name)
        blocks.append(Figure(
            f"{slug}/{png.name}",
            "Average held-out accuracy of each preset against the baseline (dashed); "
            "right: zoomed near the top.",
        ))
    return blocks


def _comparison_table(source: Source) -> tuple[str, str]:
    """The experiment's printed table, computed from its folders as the experiment does.

    Returns ``(table, explanation)``: the header and one row per preset, then the
    lines that say what the columns and tests mean.
    """
    result = compare_presets(source.path, list(source.cv_dirs), _baseline(source))
    lines = format_comparison(result).splitlines()
    rows = 1 + len(result.summaries)
    return "\n".join(lines[:rows]), " ".join(lines[rows:])


def _cv_section(source: Source, slug: str, assets: Path) -> list[Block]:
    return [
        Heading(2, f"Cross-validation {source.path.name}"),
        Paragraph(f"Folder `{source.path}`."),
        *_cv_blocks(source.path, slug, assets, level=3),
    ]


def _cv_blocks(cv_dir: Path, slug: str, assets: Path, level: int) -> list[Block]:
    """Table, curves, sparsity, activations, errors and run details of one CV folder."""
    result = load_cv(cv_dir)
    if not result.steps:
        return [Paragraph("No case has been evaluated yet."), *_details_blocks(cv_dir)]
    run_dirs = runs.run_dirs(cv_dir)
    return [
        Heading(level, "Held-out accuracy"),
        Code(format_table(result)),
        *_curve_blocks(result, cv_dir, slug, assets),
        *_sparsity_blocks(run_dirs, slug, assets, level),
        *_activation_blocks(run_dirs, slug, assets, level),
        *_error_blocks(cv_dir, slug, assets, level),
        *_details_blocks(cv_dir),
    ]


def _curve_blocks(result: CVResult, cv_dir: Path, slug: str, assets: Path) -> list[Block]:
    # Redrawn rather than copied: cheap, and always the same numbers as the table above.
    plot_accuracy(result, assets / slug / "accuracy.png", f"{cv_dir.name}: accuracy per case")
    caption = "Held-out accuracy of every case and the AVERAGE (black); right: zoomed near the top."
    return [Figure(f"{slug}/accuracy.png", caption)]


def _sparsity_blocks(run_dirs: list[Path], slug: str, assets: Path, level: int) -> list[Block]:
    """Sparsity curves of the cases that measured them, and the dense layers' live units."""
    measured = {run.name: runs.read_sparsity(run) for run in run_dirs}
    measured = {name: rows for name, rows in measured.items() if rows}
    if not measured:
        return []
    plot_sparsity(measured, assets / slug / "sparsity.png")
    dense = [row for run in run_dirs if run.name in measured
             for row in final_dense_sparsity(run, run.name)]
    return [
        Heading(level, "ReLU sparsity"),
        Figure(f"{slug}/sparsity.png",
               "Fraction of zero outputs of every ReLU layer during training, one line per case."),
        Paragraph("Live units of the hidden dense layers at the last measurement "
                  "(units × (1 − sparsity)):"),
        Code(format_live_units(dense)),
    ]


def _activation_blocks(run_dirs: list[Path], slug: str, assets: Path, level: int) -> list[Block]:
    """The grids ``facefold analyze activations`` left in the cases (none are computed here)."""
    figures = []
    for run in run_dirs:
        for png in sorted((run / ACTIVATIONS_DIR).glob("*.png")):
            name = f"{slug}/activations/{run.name}-{png.name}"
            _copy(png, assets / name)
            figures.append(Figure(name, f"{run.name}: {png.stem}"))
    if not figures:
        return []
    note = Paragraph("Each conv channel's output on one picture; red crosses: zero everywhere.")
    return [Heading(level, "Activations"), note, Gallery(figures)]


def _error_blocks(cv_dir: Path, slug: str, assets: Path, level: int) -> list[Block]:
    """Confusion matrix, error gallery and per-person table (copied, or made into ``assets``)."""
    from facefold.report.errors import save_error_report

    blocks: list[Block] = [Heading(level, "Errors")]
    target = assets / slug
    try:
        if all((cv_dir / name).is_file() for name in ERROR_FILES):
            for name in ERROR_FILES:
                _copy(cv_dir / name, target / name)
        else:
            save_error_report(cv_dir, target)
    except (FileNotFoundError, ValueError) as err:  # an unfinished case: report the rest
        return [*blocks, Paragraph(f"No error analysis: {err}")]
    return [
        *blocks,
        Figure(f"{slug}/confusion.png", "Confusion matrix, row-normalized (row = true person)."),
        Figure(f"{slug}/errors.png", "The most confidently misclassified held-out crops."),
        Paragraph("Per person, hardest first:"),
        _per_person_table(target / "per_person.csv"),
    ]


def _per_person_table(path: Path) -> Table:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows.sort(key=lambda r: float(r["accuracy"]) if r["accuracy"] else 2.0)  # no images: last
    return Table(
        ["person", "images", "correct", "accuracy", "most confused with", "times"],
        [[r["person"], r["images"], r["correct"],
          f"{float(r['accuracy']):.3f}" if r["accuracy"] else "-",
          r["most_confused_with"] or "-", r["times"]] for r in rows],
    )


def _details_blocks(cv_dir: Path) -> list[Block]:
    """Seed, config and library versions of the first case (cv.json when none has started)."""
    cv = runs.read_cv_info(cv_dir)
    first = runs.case_dir(cv_dir, cv["cases"][0]) if cv.get("cases") else cv_dir
    config_file = first / runs.CONFIG_FILE
    config = runs.read_json_object(config_file) if config_file.is_file() else cv["config"]
    versions_file = first / runs.VERSIONS_FILE
    versions = runs.read_json_object(versions_file) if versions_file.is_file() else {}
    details: list[Block] = [
        Paragraph(f"Cases {', '.join(map(str, cv['cases']))}; seed {config['train']['seed']} "
                  "(fixes data order, augmentation and initialization). The resolved config, "
                  "as a TOML file that `--config` reads:"),
        Code(_as_toml(config)),
    ]
    if versions:
        details.append(Table(["library", "version"], [[k, str(v)] for k, v in versions.items()]))
    return [Details(f"Config, seed and versions ({first.name})", details)]


def _as_toml(config: dict) -> str:
    """A resolved config in the TOML form ``--config`` reads: top-level keys, then sections."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in config.items() if not isinstance(v, dict)]
    for section, values in config.items():
        if isinstance(values, dict):  # JSON spells these scalars and lists as TOML does
            lines += [f"[{section}]", *(f"{k} = {json.dumps(v)}" for k, v in values.items())]
    return "\n".join(lines)


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)  # contents only: the source's times and mode stay as they are


# --- rendering -----------------------------------------------------------------------------------


def render_markdown(blocks: Sequence[Block]) -> str:
    """The report as Markdown; figures link to ``report_assets/<path>``."""
    return "\n\n".join(_markdown(block) for block in blocks) + "\n"


def _markdown(block: Block) -> str:
    if isinstance(block, Heading):
        return f"{'#' * block.level} {block.text}"
    if isinstance(block, Paragraph):
        return block.text
    if isinstance(block, Figure):
        return f"![{block.caption}]({ASSETS_DIR}/{block.path})\n\n*{block.caption}*"
    if isinstance(block, Gallery):
        return "\n\n".join(_markdown(figure) for figure in block.figures)
    if isinstance(block, Code):
        return f"```\n{block.text}\n```"
    if isinstance(block, Table):
        lines = [block.header, ["---"] * len(block.header), *block.rows]
        return "\n".join("| " + " | ".join(c.replace("|", r"\|") for c in line) + " |"
                         for line in lines)
    return f"**{block.summary}**\n\n" + render_markdown(block.blocks).rstrip("\n")


CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       max-width: 1150px; margin: 2em auto; padding: 0 1.5em; }
h1 { font-size: 1.8em; margin-bottom: .2em; }
h2 { font-size: 1.4em; border-bottom: 1px solid #d0d7de; padding-bottom: .25em; margin-top: 2em; }
h3 { font-size: 1.15em; margin-top: 1.6em; }
h4 { font-size: 1em; margin-top: 1.4em; }
code, pre { font: 12.5px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
code { background: #eff1f3; padding: .1em .3em; border-radius: 4px; }
pre { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: .8em 1em;
      overflow-x: auto; width: fit-content; max-width: 100%; box-sizing: border-box; }
figure { margin: 1em 0; }
img { max-width: 100%; height: auto; border: 1px solid #e5e7eb; }
figcaption { color: #59636e; font-size: .9em; }
.gallery { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.gallery figure { margin: 0; max-width: 360px; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #d0d7de; padding: .25em .7em; }
th { background: #f6f8fa; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
details { margin: 1em 0; }
summary { cursor: pointer; color: #0969da; }
"""


def render_html(blocks: Sequence[Block], assets: Path) -> str:
    """The report as one HTML page; every figure is read from ``assets`` and embedded."""
    body = "\n".join(_html(block, assets) for block in blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>facefold report</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def _inline(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _html(block: Block, assets: Path) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{html.escape(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        return f"<p>{_inline(block.text)}</p>"
    if isinstance(block, Figure):
        data = base64.b64encode((assets / block.path).read_bytes()).decode("ascii")
        caption = html.escape(block.caption)
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
                f"<figcaption>{caption}</figcaption></figure>")
    if isinstance(block, Gallery):
        figures = "\n".join(_html(figure, assets) for figure in block.figures)
        return f'<div class="gallery">\n{figures}\n</div>'
    if isinstance(block, Code):
        return f"<pre>{html.escape(block.text)}</pre>"
    if isinstance(block, Table):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
        rows = "".join(
            "<tr>" + "".join(_html_cell(c) for c in row) + "</tr>" for row in block.rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    inner = "\n".join(_html(b, assets) for b in block.blocks)
    return f"<details><summary>{html.escape(block.summary)}</summary>\n{inner}\n</details>"


def _html_cell(text: str) -> str:
    numeric = re.fullmatch(r"-?[\d.,]+", text) is not None  # numbers align on the right
    opening = '<td class="num">' if numeric else "<td>"
    return f"{opening}{html.escape(text)}</td>"
