"""``avnbench report``: the seed studies regenerated from real runs on a tiny phantom.

The runs are made through the command line as a user would: a 6-hip phantom at 40×80×80, a
2-fold split, threshold-baseline and patch25d-cnn (smoke, fold 0). The other study methods stay
"not run" and must say the command that runs them.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex

import numpy as np
import pytest
from click.testing import CliRunner

from avnbench.cli import cli

PUBLISHED = {
    "000-001": ["89 ± 9 %", "69 ± 25 %", "67 ± 23 %", "89 ± 10 %", "69 ± 26 %", "8.2 ± 7.4 cm³", "7.3 ± 6.7 cm³",
                "17 ± 15 %", "15 ± 14 %", "0.90", "0.92", "8 ± 8 %", "20 ± 16 %", "7 ± 8 %", "18 ± 14 %"],
    "002": ["0.95 [0.95, 0.96]", "0.65 mm [0.59, 0.75]", "0.89 [0.85, 0.92]", "0.76 mm [0.58, 0.96]",
            "93.7 % (59 of 63)", "0.98"],
    "003": ["70.2 ± 11.3 %", "58.5 ± 15.0 %", "92.6 ± 4.7 %", "0.933", "0.9266"],
    "004": ["87.8 %", "0.90", "84.8 %", "84.6 %"],
}
NOT_RUN = ["nnunet-ensemble", "nnunet-2d", "nnunet-3d", "dynunet", "jic-classifier"]


def _ok(result):
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    runner = CliRunner()
    _ok(runner.invoke(cli, ["data", "synth", "--out", str(root / "data"), "--cases", "6", "--shape", "40", "80", "80"]))
    _ok(runner.invoke(cli, ["data", "split", str(root / "data"), "--folds", "2"]))
    _ok(runner.invoke(cli, ["run", "--method", "threshold-baseline", "--method", "patch25d-cnn", "--preset", "smoke",
                            "--folds", "0", "--device", "cpu", "--data", str(root / "data"), "--workdir",
                            str(root / "work"), "--tracking-uri", uri, "--bootstrap", "20"]))
    _ok(runner.invoke(cli, ["report", "--tracking-uri", uri, "--out", str(root / "reports")]))
    (folder,) = (root / "reports").iterdir()
    return {"root": root, "uri": uri, "folder": folder, "md": (folder / "README.md").read_text(encoding="utf-8"),
            "html": (folder / "index.html").read_text(encoding="utf-8"),
            "json": json.loads((folder / "report.json").read_text(encoding="utf-8"))}


def _section(page: str, key: str) -> str:
    start = page.index(f"Seed {key}:")
    following = [page.index(f"Seed {k}:") for k in PUBLISHED if page.index(f"Seed {k}:") > start]
    return page[start:min(following) if following else len(page)]


@pytest.mark.parametrize("key", list(PUBLISHED))
def test_every_study_is_laid_out_with_its_published_figures(made, key):
    for page in ("md", "html"):
        section = _section(made[page], key)
        for figure in PUBLISHED[key]:
            assert figure in section, f"seed {key} ({page}) lacks the published {figure!r}"


def test_the_pages_say_the_dataset_is_synthetic_and_not_clinical(made):
    for page in ("md", "html"):
        assert "SYNTHETIC PHANTOM" in made[page] and "not a clinical result" in made[page]
    assert made["json"]["synthetic"] is True


@pytest.mark.parametrize("method", NOT_RUN)
def test_a_method_without_a_run_is_not_run_with_the_command(made, method):
    line = next(line for line in made["md"].splitlines() if line.startswith(f"- {method}:"))
    assert "not run" in line
    command = shlex.split(re.search(r"`([^`]+)`", line).group(1))
    assert command[:4] == ["avnbench", "run", "--method", method]
    options = dict(zip(command[4::2], command[5::2]))
    # the command makes a row comparable with the runs that exist: same preset, folds, data, store
    assert options["--preset"] == "smoke" and options["--folds"] == "0"
    assert options["--data"] == str(made["root"] / "data") and options["--tracking-uri"] == made["uri"]
    assert made["json"]["studies"][next(k for k, s in made["json"]["studies"].items() if method in s["runs"])]["not_run"][method]


def test_measured_figures_come_from_the_run(made):
    measured = made["json"]["studies"]["003"]["measured"]
    section = _section(made["md"], "003")
    assert f"{100 * measured['patch25d-cnn.head_dsc']:.1f} ±" in section
    assert "Task measured" in section and "proximal femur" in section and "femoral head" in section


def test_the_voxel_roc_equals_sklearn_on_the_saved_probabilities(made):
    from sklearn.metrics import roc_auc_score, roc_curve

    from avnbench.data.dataset import load_dataset

    dataset = load_dataset(made["root"] / "data")
    cases = {c.case_id: c for c in dataset.cases}
    folder = next((made["root"] / "work").glob("*/patch25d-cnn/smoke/fold_0/predictions"))
    scores, truth = [], []
    for npz in sorted(folder.glob("*_probabilities.npz")):
        p = np.load(npz)["probabilities"].astype(np.float64)
        scores.append((p[1] + p[2]).ravel())
        truth.append((cases[npz.name.removesuffix("_probabilities.npz")].label_array() > 0).ravel())
    y, s = np.concatenate(truth), np.concatenate(scores)
    measured = made["json"]["studies"]["003"]["measured"]
    assert abs(measured["patch25d-cnn.roc_auc"] - roc_auc_score(y, s)) < 2e-3  # bins of 0.001
    fpr, tpr, _ = roc_curve(y, s)
    at_cutoff = s >= measured["patch25d-cnn.roc_cutoff"]
    youden = at_cutoff[y].mean() - at_cutoff[~y].mean()
    assert youden > (tpr - fpr).max() - 2e-3
    assert "<svg" in _section(made["html"], "003")


def test_figures_are_embedded_in_the_html_and_files_for_the_markdown(made):
    html = made["html"]
    assert html.count("<figure") == html.count("<svg") >= 1
    assert not re.search(r"""(src|href)=["']?(http|figures/)""", html), "the html must not load anything"
    for name in re.findall(r"\]\((figures/[^)]+\.svg)\)", made["md"]):
        assert (made["folder"] / name).read_text(encoding="utf-8").startswith("<svg")


def test_the_unreachable_kappa_is_computed(made):
    from sklearn.metrics import cohen_kappa_score

    from avnbench.reporting.report_studies import max_kappa

    counts, best = (22, 23, 18), {"linear": -1.0, "quadratic": -1.0}
    cells = [(i, j) for i in range(3) for j in range(3) if i != j]
    for errors in itertools.combinations_with_replacement(cells, 4):
        ref = [i for i in range(3) for _ in range(counts[i])]
        pred = list(ref)
        for i, j in errors:  # turn a correct hip of class i into a prediction j
            k = next((k for k, (r, q) in enumerate(zip(ref, pred)) if r == i and q == i), None)
            if k is None:
                break
            pred[k] = j
        else:
            for w, so_far in best.items():
                best[w] = max(so_far, cohen_kappa_score(ref, pred, weights=w))
    for w, value in best.items():
        assert max_kappa(counts, 59, w) == pytest.approx(value, abs=1e-12)
        assert f"{value:.3f} {w}" in _section(made["md"], "002")
    assert max_kappa(counts, 63, "linear") == pytest.approx(1.0)


@pytest.mark.parametrize("args, words", [
    (["--dataset", "no-such-dataset"], ["no-such-dataset", "--dataset"]),
])
def test_bad_input_is_one_line(made, tmp_path, capsys, args, words):
    from avnbench.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["report", "--tracking-uri", made["uri"], "--out", str(tmp_path), *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(w in err[0] for w in words)


def test_an_empty_store_is_one_line(tmp_path, capsys):
    from avnbench.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["report", "--tracking-uri", f"sqlite:///{tmp_path / 'empty.db'}", "--out", str(tmp_path / "r")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no finished avnbench runs")


def test_the_page_renders_in_headless_chromium(made):
    from avnbench.reporting.leaderboard_html import find_chromium, screenshot

    if find_chromium() is None:
        pytest.skip("no chromium installed (apt-get install chromium)")
    png = screenshot(made["folder"] / "index.html", made["root"] / "shot.png", width=900, height=700)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rebuilding_the_roc_from_the_job_folder_equals_what_the_run_recorded(made):
    from avnbench.data.dataset import load_dataset
    from avnbench.evaluation.voxel_roc import (
        ROC_FILE,
        counts_from_job_folders,
        pooled_roc,
    )

    dataset = load_dataset(made["root"] / "data")
    cases = {c.case_id: c for c in dataset.cases}
    job = next((made["root"] / "work").glob("*/patch25d-cnn/smoke/fold_0"))
    recorded = json.loads((job / "artifacts" / ROC_FILE).read_text(encoding="utf-8"))
    result_rows = json.loads((job / "result.json").read_text(encoding="utf-8"))["rows"]
    reference = lambda case_id: cases[case_id].label_array()
    (rebuilt,) = counts_from_job_folders([job], result_rows, reference)
    assert rebuilt["cases"].keys() == recorded["cases"].keys()
    # the saved maps are float16, the recorded counts come from the float32 prediction: voxels near
    # a bin edge may move one bin, the curve stays
    a, b = pooled_roc([rebuilt]), pooled_roc([recorded])
    assert (a.n_positive, a.n_negative) == (b.n_positive, b.n_negative)
    youden = lambda roc: roc.sensitivity + roc.specificity - 1
    assert abs(a.auc - b.auc) < 1e-3 and abs(youden(a) - youden(b)) < 1e-3
    # maps that are not the run's (its scores differ) are not used
    other = [dict(r, dice_head=r["dice_head"] + 0.01) for r in result_rows]
    assert counts_from_job_folders([job], other, reference) is None
