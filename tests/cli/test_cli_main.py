"""The console entry point: interrupts print the resume hint, a plugin's sys.exit() is never silent,
and ``avnbench methods show`` prints the whole card."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from avnbench import hookimpl
from avnbench.cli import EXIT_INTERRUPTED, EXIT_TERMINATED, RESUME_HINT, cli
from avnbench.methods import Method, MethodCard

# A method whose fit announces itself in $AVNBENCH_TEST_MARKER, then ends the way the row says.
PLUGIN = textwrap.dedent('''
    import os, sys, time
    from pathlib import Path
    from avnbench import hookimpl
    from avnbench.methods import Method, MethodCard

    class Behaves(Method):
        card = MethodCard(name="behaves", task="segmentation", description="test", citation="-")
        def fit(self, train_cases, val_cases, workdir, device):
            Path(os.environ["AVNBENCH_TEST_MARKER"]).write_text("fitting")
            how = os.environ["AVNBENCH_TEST_FIT"]
            if how == "sleep":
                time.sleep(300)
            sys.exit(int(how))
        def predict(self, cases, workdir, device):
            yield from ()

    @hookimpl
    def avnbench_register_methods(register):
        register(Behaves)
''')


def _install(root: Path) -> None:
    info = root / "avnbench_behaves-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: avnbench-behaves\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[avnbench]\nbehaves = avnbench_behaves\n")
    (root / "avnbench_behaves.py").write_text(PLUGIN)


# (how fit ends, signal sent once it runs, exit status, stderr fragment)
ROWS = {
    "sigterm-resumes": ("sleep", signal.SIGTERM, EXIT_TERMINATED, RESUME_HINT),
    "ctrl-c-resumes": ("sleep", signal.SIGINT, EXIT_INTERRUPTED, RESUME_HINT),
    "plugin-sys-exit-0-is-an-error": ("0", None, 1, "error: the command was ended by sys.exit(0) in "),
    "plugin-sys-exit-3-keeps-its-status": ("3", None, 3, "avnbench_behaves.py"),
}


@pytest.mark.parametrize("fit, stop, code, fragment", ROWS.values(), ids=ROWS.keys())
def test_run_ends_with_one_line_that_says_what_happened(tiny_dataset, tmp_path, fit, stop, code, fragment):
    _install(tmp_path)
    marker = tmp_path / "fitting"
    env = os.environ | {"PYTHONPATH": str(tmp_path), "PYTHONIOENCODING": "utf-8", "AVNBENCH_TEST_FIT": fit,
                        "AVNBENCH_TEST_MARKER": str(marker)}
    env.pop("AVNBENCH_DISABLE_PLUGINS", None)
    cmd = [sys.executable, "-m", "avnbench.cli", "run", "--method", "behaves", "--data", str(tiny_dataset.root),
           "--preset", "smoke", "--folds", "0", "--device", "cpu", "--workdir", str(tmp_path / "work"),
           "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--bootstrap", "10"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8", env=env)
    try:
        if stop is not None:
            deadline = time.monotonic() + 180
            while not marker.exists():
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "fit never started"
                time.sleep(0.2)
            proc.send_signal(stop)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert marker.exists()
    assert proc.returncode == code, err
    assert fragment in err
    assert "aborted" not in err and "Traceback" not in err


# --- methods show: the card's new fields ----------------------------------------------------


def _registry_with(card: MethodCard):
    from avnbench.plugins import load_registry

    class Shown(Method):
        def fit(self, train_cases, val_cases, workdir, device):
            pass

        def predict(self, cases, workdir, device):
            yield from ()

    Shown.card = card

    class Plugin:
        __name__ = "shown"

        @hookimpl
        def avnbench_register_methods(self, register):
            register(Shown)

    return load_registry((Plugin(),), use_entry_points=False)


SEG = dict(name="shown", task="segmentation", description="d", citation="c")
CLS = dict(name="shown", task="classification", description="d", citation="c", classes=("A", "B"))
SHOW_ROWS = {
    "plain": (SEG, ["Builds on: nothing", "Uses landmarks: no"], ["Predicts:"]),
    "ensemble": ({**SEG, "builds_on": ("nnunet-2d", "nnunet-3d")}, ["Builds on: nnunet-2d, nnunet-3d"], []),
    "landmarks": ({**SEG, "uses_landmarks": True}, ["Uses landmarks: yes"], []),
    "classifier": ({**CLS, "predicts": "jic"}, ["Predicts: jic", "Classes: A, B"], []),
}


@pytest.mark.parametrize("card, shown, absent", SHOW_ROWS.values(), ids=SHOW_ROWS.keys())
def test_methods_show_prints_the_whole_card(monkeypatch, card, shown, absent):
    import avnbench.plugins

    registry = _registry_with(MethodCard(**card))
    monkeypatch.setattr(avnbench.plugins, "load_registry", lambda *a, **k: registry)
    out = CliRunner().invoke(cli, ["methods", "show", "shown"])
    assert out.exit_code == 0, out.output
    for text in shown:
        assert text in out.output
    for text in absent:
        assert text not in out.output
