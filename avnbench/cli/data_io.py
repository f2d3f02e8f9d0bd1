"""``avnbench data import | check | preview``: bring real data in, check a dataset, look at a case."""

from __future__ import annotations

from pathlib import Path

import click

from avnbench.cli.data import data
from avnbench.data.importing import DEFAULT_TARGET_SHAPE_ZYX, DEFAULT_TARGET_SPACING_ZYX


@data.command("import")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Folder of the new dataset (must be missing or empty).")
@click.option("--force", is_flag=True, help="Replace a non-empty --out folder (only once the import has succeeded).")
@click.option(
    "--target-spacing", nargs=3, type=float, default=DEFAULT_TARGET_SPACING_ZYX, show_default=True,
    metavar="Z Y X", help="Voxel spacing of the dataset in mm, array order.",
)
@click.option(
    "--target-shape", nargs=3, type=int, default=DEFAULT_TARGET_SHAPE_ZYX, show_default=True,
    metavar="Z Y X", help="Voxels of the crop around the femoral head centre, array order.",
)
@click.option("--allow-absolute-paths", is_flag=True, help="Let manifest rows name files outside the manifest's folder.")
@click.option("--name", default=None, help="Dataset name (default: the manifest's file stem or the nnU-Net dataset's name).")
def import_cmd(
    source: Path,
    out: Path,
    force: bool,
    target_spacing: tuple[float, float, float],
    target_shape: tuple[int, int, int],
    allow_absolute_paths: bool,
    name: str | None,
) -> None:
    """Import SOURCE, a CSV manifest or an nnU-Net v2 raw dataset folder, as an avnbench dataset.

    Manifest columns: case_id, patient_id, side, image, label [, steinberg, jic, arco];
    image and label are NIfTI, NRRD, MHA files or DICOM series folders, relative to the manifest.
    """
    from rich.table import Table

    from avnbench.cli.display import console, err_console
    from avnbench.data.importing import import_dataset

    with console.status(f"importing {source} ..."):
        report = import_dataset(
            source,
            out,
            target_spacing_zyx=target_spacing,
            target_shape_zyx=target_shape,
            allow_absolute_paths=allow_absolute_paths,
            name=name,
            force=force,
        )
    table = Table(title=f"{report.name}: {len(report.cases)} cases imported into {report.out}")
    for column in ("case", "source shape (z y x)", "source spacing mm", "Steinberg", "JIC", "landmarks", "side"):
        table.add_column(column)
    for c in report.cases:
        table.add_row(
            c.case_id,
            " ".join(map(str, c.source_shape_zyx)),
            " ".join(f"{s:.3g}" for s in c.source_spacing_zyx),
            _grade_cell(c.steinberg, c.grade_sources.get("steinberg")),
            _grade_cell(c.jic, c.grade_sources.get("jic")),
            "estimated" if c.landmarks_estimated else "given",
            "inferred" if c.side_inferred else "given",
        )
    console.print(table)
    spacing = " x ".join(f"{s:g}" for s in report.target_spacing_zyx)
    shape = " x ".join(map(str, report.target_shape_zyx))
    console.print(f"grid: {shape} voxels at {spacing} mm (z, y, x)")
    for w in report.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
    console.print(f"next: avnbench data check {report.out}")


def _grade_cell(grade: str | None, source: str | None) -> str:
    return "-" if grade is None else f"{grade} ({source})"


@data.command("check")
@click.argument("dataset_dir", type=click.Path(path_type=Path))
@click.option("--no-grades", is_flag=True, help="Skip recomputing grades from the label maps (faster).")
def check_cmd(dataset_dir: Path, no_grades: bool) -> None:
    """Check a dataset: files, geometry, labels, intensities, grades, landmarks and split."""
    from rich.table import Table

    from avnbench.cli.display import console
    from avnbench.data.validation import check_dataset

    with console.status(f"checking {dataset_dir} ..."):
        report = check_dataset(dataset_dir, grade=not no_grades)
    kind = "synthetic phantom" if report.synthetic else "real data"
    summary = Table(title=f"{report.name} ({kind}): {report.root}", show_header=False)
    summary.add_column("", style="bold")
    summary.add_column("")
    summary.add_row("cases", str(len(report.cases)))
    summary.add_row("patients", str(report.n_patients))
    summary.add_row("shapes (z y x)", _counts(" x ".join(map(str, c.shape_zyx)) for c in report.cases))
    summary.add_row("spacings mm (z y x)", _counts(" x ".join(f"{s:g}" for s in c.spacing_zyx) for c in report.cases))
    summary.add_row("sides", _format_counts(report.distribution("side")))
    for field, title in (("steinberg", "Steinberg"), ("jic", "JIC"), ("arco", "ARCO")):
        summary.add_row(title, _format_counts(report.distribution(field)))
    estimated = report.estimated_landmark_cases
    summary.add_row(
        "estimated landmarks",
        f"{len(estimated)}: {', '.join(estimated[:10])}{' ...' if len(estimated) > 10 else ''}" if estimated else "none",
    )
    split = report.split
    summary.add_row("split", f"{split.folds} folds, seed {split.seed}, sha256 {split.sha256[:12]}" if split else "none")
    console.print(summary)
    if report.issues:
        from rich.text import Text

        console.print(f"{len(report.errors)} error(s), {len(report.warnings)} warning(s):")
        # One unwrapped line per issue, so paths stay whole for copying and grepping.
        for i in report.issues:
            line = Text(f"{i.severity.upper()} ", style="red" if i.severity == "error" else "yellow")
            line.append(f"[{i.case_id or '-'}] {i.message}")
            console.print(line, soft_wrap=True)
    if not report.ok:
        console.print(f"[red]{len(report.errors)} error(s)[/red]: fix them before benchmarking")
        raise SystemExit(1)
    console.print("[green]ok[/green]")


def _counts(values) -> str:
    from collections import Counter

    return _format_counts(dict(Counter(values)))


def _format_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items()) or "-"


@data.command("preview")
@click.argument("dataset_dir", type=click.Path(path_type=Path))
@click.option("--case", "case_id", required=True, help="Case id to show.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="PNG file to write.")
@click.option("--pixel-mm", default=0.4, show_default=True, help="Pixel size of the reformatted planes (mm).")
@click.option("--force", is_flag=True, help="Overwrite an existing PNG.")
def preview_cmd(dataset_dir: Path, case_id: str, out: Path, pixel_mm: float, force: bool) -> None:
    """Write a PNG of one case: mid-axial and mid-coronal planes with the labels overlaid."""
    from avnbench.cli.display import console
    from avnbench.errors import ConfigError
    from avnbench.data.preview import render_preview

    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out {out}: the preview is a PNG; give a file name ending in .png")
    path = render_preview(dataset_dir, case_id, out, pixel_mm=pixel_mm, force=force)
    console.print(f"wrote {path}")
