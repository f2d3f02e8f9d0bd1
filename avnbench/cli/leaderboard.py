"""``avnbench leaderboard``: build leaderboards from MLflow."""

from __future__ import annotations

from pathlib import Path

import click

from avnbench.cli import cli


@cli.command()
@click.option("--tracking-uri", default=None, help="MLflow store. Default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("leaderboards"), show_default=True)
@click.option("--n-bootstrap", default=1000, show_default=True, type=click.IntRange(10, None),
              help="Patient-bootstrap resamples for the intervals and rank distributions.")
@click.option("--screenshot/--no-screenshot", default=False, show_default=True,
              help="Also write <dataset>/screenshot.png of the page, rendered by headless Chromium.")
def leaderboard(tracking_uri: str | None, out_dir: Path, n_bootstrap: int, screenshot: bool) -> None:
    """Write leaderboards/<dataset>/ (README.md, leaderboard.csv, index.html, figures/) from MLflow runs."""
    from rich.table import Table

    from avnbench.cli.display import console
    from avnbench.errors import AvnbenchError
    from avnbench.reporting.leaderboard import (
        analyse,
        board_tables,
        collect_boards,
        write_board,
    )
    from avnbench.reporting.leaderboard_html import screenshot as take_screenshot
    from avnbench.reporting.tracking import default_tracking_uri

    uri = tracking_uri or default_tracking_uri()
    boards = collect_boards(uri)
    if not boards:
        raise AvnbenchError(f"no finished avnbench runs in {uri}; run 'avnbench run --method ...' first")
    for board in boards:
        analysis = analyse(board, n_bootstrap)
        files = write_board(board, out_dir, analysis=analysis)
        if screenshot:
            files.append(take_screenshot(files[0], files[0].parent / "screenshot.png"))
        for name, frame in board_tables(board, analysis, headline_only=True).items():
            if frame.empty:
                continue
            title = f"{board.dataset}: {name}" + (" (SYNTHETIC PHANTOM, not clinical results)" if board.synthetic else "")
            t = Table(title=title)
            for col in frame.columns:
                t.add_column(str(col))
            for row in frame.itertuples(index=False):
                t.add_row(*[str(v) for v in row])
            console.print(t)
        console.print("written: " + ", ".join(str(f) for f in files))
