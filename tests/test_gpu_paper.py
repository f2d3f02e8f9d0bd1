"""benchmarks/gpu_paper.sh, everything short of the GPU: ``--device cpu --preset smoke`` on tiny data.

Runs the real script (synth, split, two methods on fold 0, the GPU table, the report) with the
table written into a copy of benchmarks/README.md, so the committed one is not touched.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from avnbench.reporting.report_gpu import END, START

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_paper.sh"


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, encoding="utf-8", errors="replace", timeout=timeout, env=env,
                          cwd=REPO, check=False)


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_paper")
    readme = root / "README.md"
    original = (REPO / "benchmarks" / "README.md").read_text(encoding="utf-8")
    readme.write_text(original, encoding="utf-8")
    done = _run("--device", "cpu", "--preset", "smoke", "--cases", "6", "--shape", "40", "80", "80",
                "--split-folds", "2", "--method", "threshold-baseline", "--method", "patch25d-cnn",
                "--out", str(root / "run"), "--readme", str(readme), "--reports", str(root / "reports"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root, original, readme.read_text(encoding="utf-8")


def test_the_committed_table_says_it_has_not_been_run_until_a_gpu_run():
    text = (REPO / "benchmarks" / "README.md").read_text(encoding="utf-8")
    table = text.split(START, 1)[1].split(END, 1)[0]
    assert "Not run yet" in table or "| peak GPU memory (MiB) |" in table


def test_the_script_writes_the_table_per_method(ran):
    _, original, text = ran
    table = text.split(START, 1)[1].split(END, 1)[0]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table.splitlines() if line.startswith("| ") and "method" not in line}
    assert set(rows) == {"threshold-baseline", "patch25d-cnn"}
    preset, folds, epochs, per_epoch, fit, infer, memory = rows["patch25d-cnn"]
    assert (preset, folds, epochs) == ("smoke", "1", "2")  # patch25d smoke trains 2 epochs
    assert float(per_epoch) > 0 and float(fit) > 0 and float(infer) > 0 and memory == "–"
    assert rows["threshold-baseline"][2] == "–"  # no training epochs
    assert "CPU only" in table and "preset smoke" in table
    # only the table changed
    assert text.split(START)[0] == original.split(START)[0] and text.split(END)[1] == original.split(END)[1]


def test_the_script_writes_the_report(ran):
    root = ran[0]
    (page,) = (root / "reports").glob("*/index.html")
    html = page.read_text(encoding="utf-8")
    assert "SYNTHETIC PHANTOM" in html and "<svg" in html


@pytest.mark.parametrize("args, words", [
    (["--device", "tpu"], "--device tpu"),
    (["--executor", "slurm"], "--executor slurm"),
    (["--frobnicate"], "unknown option --frobnicate"),
])
def test_bad_options_are_one_line(args, words):
    done = _run(*args, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0]


def test_cuda_without_a_gpu_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    done = _run("--out", str(tmp_path / "run"), timeout=120)
    assert done.returncode == 2 and "no CUDA GPU" in done.stderr
    assert not (tmp_path / "run" / "data").exists()
