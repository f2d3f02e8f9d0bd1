"""``avnbench ui``: opens the runs view, and Ctrl-C or SIGTERM leaves nothing listening or running."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from avnbench.cli.ui import pick_experiment, runs_url
from avnbench.errors import ConfigError

STARTUP_S = 180  # MLflow's server imports a lot; the test machine is slow and shared
STOP_S = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _store(tmp_path: Path, experiments: list[str], runs: tuple[str, ...] = ()) -> tuple[str, dict[str, str]]:
    """A SQLite store with these experiments, created in order, and a run in each of ``runs``."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    ids = {}
    for name in experiments:
        ids[name] = client.create_experiment(name)
        time.sleep(0.01)  # distinct creation times
    for name in runs:
        client.create_run(ids[name])
        time.sleep(0.01)
    return uri, ids


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a live process, from /proc; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), fields[0], int(fields[19])


def _descendants(pid: int) -> dict[int, int]:
    """Every process below ``pid``: pid → start time (to tell a reused pid apart)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))):
            children.setdefault(st[0], []).append(int(entry.name))
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if (st := _stat(child)) is not None:
                found[child] = st[2]
                todo.append(child)
    return found


def _survivors(processes: dict[int, int]) -> list[int]:
    """The processes still running (a zombie left for an init that does not reap is not running)."""
    return [p for p, start in processes.items() if (st := _stat(p)) and st[2] == start and st[1] != "Z"]


def _port_refuses(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc (Linux)")
@pytest.mark.parametrize(
    "stop, experiments, expected",
    [
        (signal.SIGTERM, ["phantom-a", "phantom-b"], "runs of 'phantom-b'"),
        (signal.SIGINT, [], "no experiment in "),
    ],
    ids=["sigterm-opens-the-newest-experiment", "ctrl-c-on-an-empty-store"],
)
def test_ui_opens_the_runs_and_a_signal_stops_the_whole_server(tmp_path, stop, experiments, expected):
    uri, ids = _store(tmp_path, experiments)
    port = _free_port()
    out = (tmp_path / "out.txt").open("w")
    env = os.environ | {"PYTHONIOENCODING": "utf-8"}
    ui = subprocess.Popen([sys.executable, "-m", "avnbench.cli", "ui", "--tracking-uri", uri, "--port", str(port),
                           "--no-browser"], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + STARTUP_S
        while not _answers(f"http://127.0.0.1:{port}/health"):
            assert ui.poll() is None, (tmp_path / "out.txt").read_text()
            assert time.monotonic() < deadline, "MLflow's server did not start"
            time.sleep(0.5)
        server = _descendants(ui.pid)
        assert server, "the server runs as a child of avnbench ui"
        while "Ctrl-C stops it" not in (tmp_path / "out.txt").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.2)
        ui.send_signal(stop)
        assert ui.wait(timeout=STOP_S) == 0
    finally:
        if ui.poll() is None:
            ui.kill()
            ui.wait()
        out.close()
    printed = (tmp_path / "out.txt").read_text()
    assert expected in printed and "MLflow UI stopped" in printed
    newest = ids.get("phantom-b")
    assert runs_url(f"http://127.0.0.1:{port}", newest) in printed
    deadline = time.monotonic() + STOP_S
    while _survivors(server) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _survivors(server)
    for pid in left:  # a failing test must not leave a server behind
        os.kill(pid, signal.SIGKILL)
    assert not left, f"still running: {left}"
    assert _port_refuses(port)


@pytest.mark.parametrize(
    "experiments, runs, asked, expected",
    [
        (["a", "b"], ("b", "a"), None, "a"),
        (["a", "b"], (), None, "b"),
        (["a", "b"], ("a",), "b", "b"),
        ([], (), None, None),
        (["a"], (), "nope", "no experiment 'nope' in the tracking store. Experiments (one per dataset): a"),
    ],
    ids=["latest-run", "newest-without-runs", "named", "empty-store", "unknown-name"],
)
def test_pick_experiment(tmp_path, experiments, runs, asked, expected):
    from mlflow import MlflowClient

    uri, _ = _store(tmp_path, experiments, runs)
    client = MlflowClient(tracking_uri=uri)
    if expected is not None and expected.startswith("no experiment"):
        with pytest.raises(ConfigError, match=re.escape(expected)):
            pick_experiment(client, asked)
        return
    picked = pick_experiment(client, asked)
    assert (picked.name if picked else None) == expected


@pytest.mark.parametrize(
    "experiment_id, route",
    [("3", "/#/experiments/3/runs?workflowType=machine_learning"), (None, "/#/experiments?workflowType=machine_learning")],
)
def test_runs_url_selects_the_runs_table_not_the_genai_pages(experiment_id, route):
    assert runs_url("http://127.0.0.1:5000", experiment_id) == "http://127.0.0.1:5000" + route
