"""``avnbench data synth``: a summary on success, one line and exit 2 on bad input."""

import pytest

from avnbench.cli import main
from avnbench.data.dataset import load_dataset


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_synth_writes_a_dataset_and_prints_a_summary(tmp_path, capsys):
    out = tmp_path / "ds"
    code, stdout, stderr = run_cli(
        ["data", "synth", "--out", str(out), "--cases", "3", "--seed", "2", "--shape", "32", "40", "40"], capsys
    )
    assert code == 0, stderr
    ds = load_dataset(out)
    assert ds.name == "avn-phantom-v2-t1-n3-s2-32x40x40" and len(ds) == 3
    assert "Steinberg" in stdout and "JIC" in stdout and "patients" in stdout and ds.name in stdout


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--cases", "0"], "--cases must be at least 1"),
        (["--shape", "12", "80", "80"], "too small"),
        (["--shape", "40", "20", "80"], "too small"),
    ],
)
def test_bad_options_give_one_line_and_write_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "new"
    code, stdout, stderr = run_cli(["data", "synth", "--out", str(out), *extra], capsys)
    assert code == 2
    assert message in stderr and len(stderr.strip().splitlines()) == 1
    assert "Traceback" not in stderr + stdout
    assert not out.exists()


def test_non_empty_folder_is_refused_untouched(tmp_path, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "a.txt").write_text("keep")
    code, _, stderr = run_cli(["data", "synth", "--out", str(busy), "--cases", "1"], capsys)
    assert code == 2 and "not empty" in stderr and "--force" in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert [p.name for p in busy.iterdir()] == ["a.txt"] and (busy / "a.txt").read_text() == "keep"
