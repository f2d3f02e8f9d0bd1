"""The leaderboard on real runs: comparable rows only, n, IQR, ranks, figures, and the page in Chromium."""

from __future__ import annotations

import re
import shutil
import tempfile

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from avnbench.reporting.leaderboard import (
    analyse,
    collect_boards,
    readme_text,
    write_board,
)
from avnbench.reporting.leaderboard_html import CHROMIUM_FLAGS, find_chromium
from avnbench.reporting.leaderboard_rows import BoardRow, mark_comparable
from avnbench.runner import run_benchmark

N_BOOT = 50


@pytest.fixture(scope="module")
def store(tiny_dataset, tmp_path_factory):
    """threshold-baseline smoke and quick on folds 0,1 (compared), smoke on fold 0 (apart), and
    jic-classifier smoke on folds 0,1 (graded beside the segmentation)."""
    root = tmp_path_factory.mktemp("board")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    for method, preset, folds in [("threshold-baseline", "smoke", [0, 1]), ("threshold-baseline", "quick", [0, 1]),
                                  ("threshold-baseline", "smoke", [0]), ("jic-classifier", "smoke", [0, 1])]:
        run_benchmark(method, tiny_dataset.root, root / "work", preset=preset, folds=folds, tracking_uri=uri,
                      n_bootstrap=N_BOOT)
    return uri, root


@pytest.fixture(scope="module")
def board(store):
    (board,) = collect_boards(store[0])
    return board


@pytest.fixture(scope="module")
def written(board, store):
    return write_board(board, store[1] / "lb", n_bootstrap=N_BOOT)


def test_only_rows_on_the_same_folds_are_compared(board):
    compared = {(r.method, r.preset, r.folds) for r in board.compared}
    assert compared == {("threshold-baseline", "smoke", "0,1"), ("threshold-baseline", "quick", "0,1"),
                        ("jic-classifier", "smoke", "0,1")}
    (apart,) = board.apart
    assert (apart.method, apart.folds) == ("threshold-baseline", "0")
    assert apart.not_compared == "other fold set (0 vs 0,1)"


def _row(**kw) -> BoardRow:
    base = {"method": "m", "preset": "smoke", "task": "segmentation", "run_id": "r", "device": "cpu", "metrics": {},
                "dataset_fingerprint": "f" * 64, "split_sha256": "s" * 64, "folds": "0,1"}
    return BoardRow(**(base | kw))


@pytest.mark.parametrize(
    ("other", "reason"),
    [
        ({"dataset_fingerprint": "e" * 64}, "other dataset version"),
        ({"split_sha256": "t" * 64}, "other split"),
        ({"folds": "0"}, "other fold set (0 vs 0,1)"),
    ],
)
def test_why_a_row_is_not_compared(other, reason):
    rows = [_row(run_id="a", method="a"), _row(run_id="b", method="b"), _row(run_id="c", method="c", **other)]
    mark_comparable(rows)
    assert [r.not_compared for r in rows[:2]] == ["", ""]
    assert rows[2].not_compared.startswith(reason)


def test_the_group_with_most_methods_is_the_main_one():
    rows = [_row(run_id="a", method="a", folds="0,1,2,3"), _row(run_id="b", method="b"), _row(run_id="c", method="c")]
    mark_comparable(rows)
    assert rows[0].not_compared.startswith("other fold set") and not rows[1].not_compared


def test_ranks_n_and_iqr_come_from_the_per_case_tables(board, written):
    csv = pd.read_csv(next(p for p in written if p.name == "leaderboard.csv"))
    compared = csv[csv["compared"]]
    seg = compared[compared["task"] == "segmentation"].set_index("preset")
    assert set(seg["dice_necrosis.rank"]) <= {1, 2} and 1 in set(seg["dice_necrosis.rank"])
    assert (seg["dice_necrosis.rank_ci_low"] <= seg["dice_necrosis.rank"]).all()
    assert (seg["dice_necrosis.rank"] <= seg["dice_necrosis.rank_ci_high"]).all()
    row = next(r for r in board.compared if r.preset == "quick")
    frame = row.case_frame
    assert seg.loc["quick", "n_hips"] == len(frame) and seg.loc["quick", "n_patients"] == frame["patient_id"].nunique()
    dice = pd.to_numeric(frame["dice_necrosis"], errors="coerce").dropna()
    q1, med, q3 = np.quantile(dice, [0.25, 0.5, 0.75])
    assert seg.loc["quick", "dice_necrosis.q1"] == pytest.approx(q1)
    assert seg.loc["quick", "dice_necrosis.median"] == pytest.approx(med)
    assert seg.loc["quick", "dice_necrosis.iqr"] == pytest.approx(q3 - q1)
    assert seg.loc["quick", "dice_necrosis.n_hips"] == len(dice)
    # the headline ASSD leaves out one-empty hips (their penalty is the image diagonal)
    both = frame["empty_necrosis"] == "none"
    assd = pd.to_numeric(frame.loc[both, "assd_necrosis_mm"])
    assert seg.loc["quick", "assd_necrosis_mm.mean"] == pytest.approx(assd.mean())
    assert "dice_necrosis" in csv.columns  # the run's own logged metrics stay


def test_grading_compares_the_same_hips_and_says_what_the_card_says(board):
    analysis = analyse(board, n_bootstrap=N_BOOT)
    jic = next(g for g in analysis.grades if g.system == "jic")
    assert set(jic.names) == {"threshold-baseline (smoke)", "threshold-baseline (quick)", "jic-classifier (smoke)"}
    sizes = {name: jic.accuracy.summary(name)["n_hips"] for name in jic.names}
    assert len(set(sizes.values())) == 1  # the same lesion hips for all
    classifier = next(r for r in board.compared if r.method == "jic-classifier")
    assert classifier.grade_source() == "JIC classifier, trained on necrosis masks too, uses landmarks"
    # what the run's config trained on is recorded with the run, and the row reads it from there
    assert classifier.params["trains_on"] == "grades,masks,landmarks" == ",".join(classifier.trains_on)
    baseline = next(r for r in board.compared if r.method == "threshold-baseline")
    assert baseline.params["trains_on"] == "masks"
    steinberg = next(g for g in analysis.grades if g.system == "steinberg")
    assert "jic-classifier (smoke)" not in steinberg.names  # its card predicts JIC only


def test_a_setting_that_turns_mask_supervision_off_shows_in_the_row_label():
    from avnbench.plugins import load_registry
    from avnbench.reporting.leaderboard_rows import _card_facts

    entry = load_registry().methods["jic-classifier"]
    paper = entry.cls.Config.preset("paper")
    assert paper.trains_on(entry.card) == ("grades", "landmarks")
    facts = _card_facts("jic-classifier", {"trains_on": ",".join(paper.trains_on(entry.card))}, load_registry())
    row = _row(method="jic-classifier", task="classification", **facts)
    assert row.grade_source() == "JIC classifier, uses landmarks"


def test_readme_is_readable_in_120_columns(board):
    text = readme_text(analyse(board, n_bootstrap=N_BOOT))
    assert max(len(line) for line in text.splitlines()) <= 120
    assert "`" not in text
    assert "## Not compared" in text and "other fold set (0 vs 0,1)" in text
    assert "| rank | method | n |" in text and "SYNTHETIC PHANTOM" in text


def test_page_is_self_contained_with_links_figures_and_provenance(board, written):
    page = written[0].read_text(encoding="utf-8")
    assert "`" not in page and "<script src" not in page and "<link" not in page
    run = next(r for r in board.compared if r.preset == "quick")
    assert f"href='http://127.0.0.1:5000/#/experiments/{run.experiment_id}/runs/{run.run_id}'" in page
    assert page.count("<svg") >= 4 and "SYNTHETIC PHANTOM" in page
    # figure text is text, not a copy of every glyph's outline per figure
    assert "<text" in page and 'id="DejaVuSans-' not in page
    assert re.search(r"avnbench \d+\.\d+\.\d+", page) and "commit" in page
    assert re.search(r"title='Dice necrosis: n = \d+ hips, \d+ patients; 95 % CI", page)
    svgs = sorted(p for p in written if p.suffix == ".svg")
    names = {p.stem for p in svgs}
    assert {"rank_blobs_dice_necrosis", "significance_dice_necrosis", "cases_dice_necrosis", "bland_altman_relvol"} <= names
    for svg in svgs:
        assert "(synthetic)" in svg.read_text(encoding="utf-8")


def test_figures_are_deterministic(board, store):
    first = write_board(board, store[1] / "again1", n_bootstrap=N_BOOT)
    second = write_board(board, store[1] / "again2", n_bootstrap=N_BOOT)
    for a, b in zip(first, second):
        if a.suffix == ".svg":
            assert a.read_bytes() == b.read_bytes(), a.name


def test_cli_writes_the_board(store):
    from avnbench.cli import cli

    out = store[1] / "cli"
    result = CliRunner().invoke(cli, ["leaderboard", "--tracking-uri", store[0], "--out", str(out), "--n-bootstrap", "20"])
    assert result.exit_code == 0, result.output
    assert "not compared" in result.output
    (folder,) = out.iterdir()
    assert {"README.md", "leaderboard.csv", "index.html", "figures"} <= {p.name for p in folder.iterdir()}


# ----------------------------------------------------------------------------------------------
# the page in headless Chromium

CHROMEDRIVER = shutil.which("chromedriver")


def _needs_chromium():
    if find_chromium() is None or CHROMEDRIVER is None:
        pytest.skip("no chromium/chromedriver installed (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium", reason="selenium is in the test extra: pip install -e '.[test]'")


@pytest.fixture
def browser():
    _needs_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = find_chromium()
    profile = tempfile.mkdtemp(prefix="avnbench-chromium-")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1500,1200"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _column(driver, table: str, index: int) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0] + ' tbody tr')).map("
        "r => r.cells[arguments[1]].getAttribute('data-sort') ?? r.cells[arguments[1]].textContent)",
        f"#{table}", index)


def test_page_renders_and_sorts_in_chromium(browser, written):
    from selenium.webdriver.common.by import By

    browser.get(written[0].resolve().as_uri())
    rows = browser.find_elements(By.CSS_SELECTOR, "#segmentation tbody tr")
    assert len(rows) == 2 and all(r.is_displayed() for r in rows)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#not-compared tbody tr")) == 1
    assert len(browser.find_elements(By.CSS_SELECTOR, "figure svg")) >= 4
    headers = browser.find_elements(By.CSS_SELECTOR, "#segmentation thead th")
    method = next(i for i, h in enumerate(headers) if h.text.strip() == "method")
    headers[method].click()
    names = _column(browser, "segmentation", method)
    assert names == sorted(names) and headers[method].get_attribute("aria-sort") == "ascending"
    headers[method].click()
    assert _column(browser, "segmentation", method) == sorted(names, reverse=True)
    dice = next(i for i, h in enumerate(headers) if h.text.strip() == "Dice vital")
    headers[dice].click()
    values = [float(v) for v in _column(browser, "segmentation", dice)]
    assert values == sorted(values)


def test_screenshot_of_the_board(written, store):
    _needs_chromium()
    from avnbench.reporting.leaderboard_html import screenshot

    png = screenshot(written[0], store[1] / "shot.png", width=800, height=600)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_compared_row_without_its_per_case_table_shows_dashes(board):
    from avnbench.reporting.leaderboard import board_tables

    quick = next(r for r in board.compared if r.preset == "quick")
    bare = board.model_copy(update={"rows": [r.model_copy(update={"cases": []}) if r is quick else r for r in board.rows]})
    analysis = analyse(bare, n_bootstrap=N_BOOT)
    seg = board_tables(bare, analysis)["segmentation"].set_index("method")
    assert seg.loc["threshold-baseline (quick)", "Dice necrosis"] == "–"
    assert seg.loc["threshold-baseline (quick)", "rank"] == "–"
    assert seg.loc["threshold-baseline (smoke)", "rank"].startswith("1 ")


def test_reused_fit_cost_is_footnoted(board):
    from avnbench.reporting.leaderboard import board_tables, footnotes

    quick = next(r for r in board.compared if r.preset == "quick")
    ensemble = board.model_copy(update={"rows": [
        r.model_copy(update={"builds_on": ["member-a", "member-b"]}) if r is quick else r for r in board.rows]})
    analysis = analyse(ensemble, n_bootstrap=N_BOOT)
    seg = board_tables(ensemble, analysis)["segmentation"].set_index("method")
    assert seg.loc["threshold-baseline (quick)", "fit (s/fold)"].endswith(" †")
    assert not seg.loc["threshold-baseline (smoke)", "fit (s/fold)"].endswith("†")
    assert any(n.startswith("† threshold-baseline (quick)") and "member-a, member-b" in n for n in footnotes(analysis))


def test_a_board_of_classifiers_only_still_renders(board, tmp_path):
    only = board.model_copy(update={"rows": [r for r in board.rows if r.task == "classification"]})
    page = write_board(only, tmp_path, n_bootstrap=N_BOOT)[0].read_text(encoding="utf-8")
    assert "No compared segmentation runs." in page and "JIC classifier" in page


def test_a_plugin_metric_in_the_registry_becomes_a_board_column(board):
    from avnbench.evaluation.metrics import MetricDef, default_metrics

    metrics = default_metrics()
    metrics.register(MetricDef(
        name="necrosis_overcall_cm3", doc="predicted minus reference necrosis (cm³)", aggregation="mean",
        unit="cm³", label="necrosis", higher_is_better=False, title="overcall (cm³)", table="segmentation",
        compute=lambda row: float(row["necrosis_cm3_pred"]) - float(row["necrosis_cm3_ref"]),
    ), plugin="test-plugin")
    analysis = analyse(board, N_BOOT, metrics=metrics)
    result = analysis.metric("necrosis_overcall_cm3")
    assert result is not None and result.metric.title == "overcall (cm³)" and not result.metric.ranked
    row = next(r for r in board.compared if r.preset == "quick")
    frame = row.case_frame
    expected = (pd.to_numeric(frame["necrosis_cm3_pred"]) - pd.to_numeric(frame["necrosis_cm3_ref"])).mean()
    assert result.summary(analysis.name(row))["mean"] == pytest.approx(expected)
    # the ranked metrics and their order are the registry's
    assert [m.metric.key for m in analysis.metrics if m.metric.ranked] == [d.name for d in metrics.ranked()]
    assert analysis.primary.metric.key == "dice_necrosis"
