"""``avnbench leaderboard``: build leaderboards from MLflow."""

from __future__ import annotations

from pathlib import Path

import click

from avnbench.cli import cli


@cli.command()
@click.option("--tracking-uri", default=None, help="MLflow store. Default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("leaderboards"), show_default=True)
def leaderboard(tracking_uri: str | None, out_dir: Path) -> None:
    """Write leaderboards/<dataset>/ (README.md, leaderboard.csv, index.html) from MLflow runs."""
    from rich.table import Table

    from avnbench.cli.display import console
    from avnbench.errors import AvnbenchError
    from avnbench.reporting.leaderboard import board_tables, collect_boards, write_board
    from avnbench.reporting.tracking import default_tracking_uri

    uri = tracking_uri or default_tracking_uri()
    boards = collect_boards(uri)
    if not boards:
        raise AvnbenchError(f"no finished avnbench runs in {uri}; run 'avnbench run --method ...' first")
    for board in boards:
        files = write_board(board, out_dir)
        for name, frame in board_tables(board).items():
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
