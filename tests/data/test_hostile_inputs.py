"""Hostile inputs, one row each: the real CLI must answer with one line, exit non-zero, and leave
every folder involved as it was.

Each row builds its bad input from a fresh copy of one small workspace made once per module:
``ds/`` (a 4-case 40×80×80 phantom with a 2-fold split), ``src/`` (two of its cases as a CSV
manifest source) and ``pred/`` (predictions for every case: copies of the reference labels).
The next bad input is one more row.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import SimpleITK as sitk

from avnbench.cli import main
from avnbench.testing import make_tiny_dataset

PHANTOM_GRID = ["--target-spacing", "2", "0.88", "0.88", "--target-shape", "40", "80", "80"]


def _without_permission_override() -> None:
    """In the child, before exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the
    bounding set, so that even root meets a read-only folder as one (Linux prctl)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@dataclass
class Env:
    """What a row's build step may use: the workspace, pytest's monkeypatch, an exit stack for
    anything held while the command runs, and how the command is to be run."""

    w: Path
    mp: pytest.MonkeyPatch
    stack: ExitStack
    cwd: Path | None = None
    subprocess_as: str | None = None  # "read-only" (permissions apply even to root), "fsize" (tiny RLIMIT_FSIZE)


@dataclass(frozen=True)
class Row:
    id: str
    build: Callable[[Env], None]
    args: list[str]
    fragment: str
    code: int = 2
    stream: str = "err"  # where the fragment appears: "err" (one error line) or "out" (data check's report)
    also: tuple[str, ...] = field(default_factory=tuple)  # further fragments on the same stream


# ----------------------------------------------------------------------------- the workspace


@pytest.fixture(scope="module")
def base() -> Path:
    root = Path(tempfile.mkdtemp(prefix="avn-hostile-"))
    ds = make_tiny_dataset(root / "ds", n_cases=4, seed=3, folds=2).root
    src = root / "src"
    src.mkdir()
    rows = ["case_id,patient_id,side,image,label"]
    cases = json.loads((ds / "cases.json").read_text())["cases"][:2]
    for c in cases:
        shutil.copy(ds / "imagesTr" / f"{c['case_id']}_0000.nii.gz", src / f"{c['case_id']}.nii.gz")
        shutil.copy(ds / "labelsTr" / f"{c['case_id']}.nii.gz", src / f"{c['case_id']}_seg.nii.gz")
        rows.append(f"{c['case_id']},{c['patient_id']},{c['side']},{c['case_id']}.nii.gz,{c['case_id']}_seg.nii.gz")
    (src / "m.csv").write_text("\n".join(rows) + "\n")
    shutil.copytree(ds / "labelsTr", root / "pred")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def snapshot(folder: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under ``folder``: (size, mtime) for files, None for folders."""
    out: dict[str, tuple[int, int] | None] = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(folder))] = None if p.is_dir() else (st.st_size, st.st_mtime_ns)
    return out


def first_case(w: Path) -> str:
    return json.loads((w / "ds" / "cases.json").read_text())["cases"][0]["case_id"]


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def set_first_case_id(w: Path, case_id: str) -> None:
    edit_json(w / "ds" / "cases.json", lambda d: d["cases"][0].update(case_id=case_id))


def truncate(path: Path, keep: int | None = None) -> None:
    """Cut a file to ``keep`` bytes (default: half of it)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


# ----------------------------------------------------------------------------- build steps


def absolute_case_id(e: Env) -> None:
    set_first_case_id(e.w, "/etc/passwd")


def long_case_id(e: Env) -> None:
    set_first_case_id(e.w, "a" * 300)


def long_manifest_case_id(e: Env) -> None:
    m = e.w / "src" / "m.csv"
    lines = m.read_text().splitlines()
    lines[1] = "a" * 300 + lines[1][lines[1].index(","):]
    m.write_text("\n".join(lines) + "\n")


def image_linked_outside(e: Env) -> None:
    case = first_case(e.w)
    image = e.w / "ds" / "imagesTr" / f"{case}_0000.nii.gz"
    shutil.move(image, e.w / "elsewhere.nii.gz")
    image.symlink_to(e.w / "elsewhere.nii.gz")


def entry_without_files(e: Env) -> None:
    case = first_case(e.w)
    (e.w / "ds" / "imagesTr" / f"{case}_0000.nii.gz").unlink()
    (e.w / "ds" / "labelsTr" / f"{case}.nii.gz").unlink()


def empty_source_image(e: Env) -> None:
    next((e.w / "src").glob("*_seg.nii.gz")).with_name(f"{first_case(e.w)}.nii.gz").write_bytes(b"")


def empty_dataset_label(e: Env) -> None:
    (e.w / "ds" / "labelsTr" / f"{first_case(e.w)}.nii.gz").write_bytes(b"")


def truncated_prediction(e: Env) -> None:
    truncate(e.w / "pred" / f"{first_case(e.w)}.nii.gz")


def truncated_reference(e: Env) -> None:
    truncate(e.w / "ds" / "labelsTr" / f"{first_case(e.w)}.nii.gz")


def corrupt_splits_meta(e: Env) -> None:
    (e.w / "ds" / "splits.meta.json").write_text('{"folds": 2, "seed": ')


def edit_split(edit) -> Callable[[Env], None]:
    def build(e: Env) -> None:
        edit_json(e.w / "ds" / "splits_final.json", edit)

    return build


def _drop_from_val(folds) -> None:
    folds[0]["val"].pop()


def _val_twice(folds) -> None:
    twice = folds[0]["val"][0]
    folds[1]["train"].remove(twice)
    folds[1]["val"].append(twice)


def _unknown_case(folds) -> None:
    folds[0]["train"].append("ghost")


def _train_and_val(folds) -> None:
    folds[0]["train"].append(folds[0]["val"][0])


def read_only(*parts: str) -> Callable[[Env], None]:
    def build(e: Env) -> None:
        folder = e.w.joinpath(*parts)
        folder.mkdir(exist_ok=True)
        folder.chmod(0o555)
        e.subprocess_as = "read-only"
        e.stack.callback(folder.chmod, 0o755)

    return build


def split_in_read_only_dataset(e: Env) -> None:
    for name in ("splits_final.json", "splits.meta.json"):
        (e.w / "ds" / name).unlink()
    read_only("ds")(e)


def full_disk(e: Env) -> None:
    e.subprocess_as = "fsize"


def zero_byte_writes(e: Env) -> None:
    from avnbench.data import imageio

    e.mp.setattr(imageio, "_itk_write", lambda image, path, level: Path(path).write_bytes(b""))


def truncated_writes(e: Env) -> None:
    from avnbench.data import imageio

    real = imageio._itk_write

    def write_half(image, path, level):
        real(image, path, level)
        truncate(Path(path))

    e.mp.setattr(imageio, "_itk_write", write_half)


def in_source_folder(e: Env) -> None:
    e.cwd = e.w / "src"


def non_dataset_folder(e: Env) -> None:
    (e.w / "results").mkdir()
    (e.w / "results" / "precious.csv").write_text("keep me")


def existing_png(e: Env) -> None:
    (e.w / "p.png").write_bytes(b"\x89PNG old")


def dicom_missing_slice(e: Env) -> None:
    case = first_case(e.w)
    image = sitk.Cast(sitk.RescaleIntensity(sitk.ReadImage(str(e.w / "src" / f"{case}.nii.gz")), 0, 2000), sitk.sitkInt16)
    folder = e.w / "src" / "dicom"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = image.GetDirection()
    uid = "1.2.826.0.1.3680043.2.1125.42"
    for k in range(image.GetDepth()):
        if k == 10:
            continue  # the missing slice
        sl = image[:, :, k]
        for tag, value in {
            "0008|0060": "MR", "0020|000d": uid + ".1", "0020|000e": uid + ".2", "0010|0020": "P1",
            "0020|0037": "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
            "0020|0032": "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
            "0020|0013": str(k + 1), "0008|0018": f"{uid}.3.{k + 1}",
            "0028|0030": f"{image.GetSpacing()[1]:.4f}\\{image.GetSpacing()[0]:.4f}",
        }.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"s{k:03d}.dcm"))
        writer.Execute(sl)
    m = e.w / "src" / "m.csv"
    m.write_text(m.read_text().replace(f"{case}.nii.gz,", "dicom,", 1))


def duplicate_column(e: Env) -> None:
    m = e.w / "src" / "m.csv"
    lines = m.read_text().splitlines()
    lines[0] += ",side"
    lines[1:] = [line + ",R" for line in lines[1:]]
    m.write_text("\n".join(lines) + "\n")


def import_running(e: Env) -> None:
    from avnbench.data.files import exclusive_lock

    e.stack.enter_context(exclusive_lock(e.w / "out"))


def existing_file(name: str, content: bytes = b"not a folder\n") -> Callable[[Env], None]:
    def build(e: Env) -> None:
        (e.w / name).write_bytes(content)

    return build


def nothing(e: Env) -> None:
    pass


IMPORT = ["data", "import", "{w}/src/m.csv", "--out", "{w}/out"]
SCORE = ["score", "--pred", "{w}/pred", "--ref", "{w}/ds", "--no-plots", "--bootstrap", "0"]
RUN = ["run", "--method", "threshold-baseline", "--preset", "smoke", "--data", "{w}/ds", "--workdir", "{w}/work",
       "--tracking-uri", "sqlite:///{w}/m.db", "--device", "cpu", "--bootstrap", "0"]
PREVIEW = ["data", "preview", "{w}/ds", "--case", "{case}", "--out", "{w}/p.png"]

ROWS = [
    # the dataset contract, wherever a dataset is read
    Row("absolute-case-id-check", absolute_case_id, ["data", "check", "{w}/ds"], "case_id '/etc/passwd' must be"),
    Row("absolute-case-id-score", absolute_case_id, SCORE, "cases.json: invalid cases.json"),
    Row("300-char-case-id", long_case_id, ["data", "check", "{w}/ds"], "(300 characters) must be 1-100"),
    Row("300-char-case-id-manifest", long_manifest_case_id, IMPORT, "m.csv:2: case_id"),
    Row("image-linked-outside", image_linked_outside, SCORE, "outside"),
    Row("entry-without-files", entry_without_files, SCORE, "not found (and 1 more); restore the file"),
    Row("entry-without-files-check", entry_without_files, ["data", "check", "{w}/ds"], "file not found", code=1, stream="out"),
    # one checked reader
    Row("0-byte-nifti-import", empty_source_image, IMPORT, "empty file (0 bytes)"),
    Row("0-byte-nifti-check", empty_dataset_label, ["data", "check", "{w}/ds"], "empty file (0 bytes)", code=1,
        stream="out", also=("1 error(s)", "cases")),
    Row("truncated-prediction", truncated_prediction, SCORE, "truncated"),
    Row("truncated-reference", truncated_reference, SCORE, "truncated"),
    # splits
    Row("corrupt-splits-meta", corrupt_splits_meta, ["data", "split", "{w}/ds", "--folds", "2"], "invalid splits.meta.json"),
    Row("case-in-no-val-fold", edit_split(_drop_from_val), ["data", "split", "{w}/ds", "--folds", "2"], "in no validation fold"),
    Row("case-in-two-val-folds", edit_split(_val_twice), ["data", "split", "{w}/ds", "--folds", "2"],
        "in several validation folds"),
    Row("unknown-case-in-split", edit_split(_unknown_case), ["data", "check", "{w}/ds"], "names cases not in the dataset: ghost",
        code=1, stream="out"),
    Row("case-in-train-and-val", edit_split(_train_and_val), ["data", "split", "{w}/ds", "--folds", "2"], "leaks patient(s)", also=("in both",)),
    # writing: read-only folders, a full disk, a second writer
    Row("read-only-import", read_only("ro"), ["data", "import", "{w}/src/m.csv", "--out", "{w}/ro/out"], "ro is not writable"),
    Row("read-only-split", split_in_read_only_dataset, ["data", "split", "{w}/ds", "--folds", "2"], "not writable"),
    Row("read-only-score", read_only("ro"), [*SCORE, "--out", "{w}/ro/scores.csv"], "not writable"),
    Row("full-disk-import", full_disk, [*IMPORT, *PHANTOM_GRID], "the disk may be full"),
    Row("0-byte-write-import", zero_byte_writes, [*IMPORT, *PHANTOM_GRID], "0 bytes written"),
    Row("truncated-write-import", truncated_writes, [*IMPORT, *PHANTOM_GRID], "the disk may be full"),
    Row("concurrent-import", import_running, IMPORT, "another avnbench process (pid"),
    # options
    Row("target-shape-1-1-1", nothing, [*IMPORT, "--target-shape", "1", "1", "1"], "from 16 to 1024"),
    Row("out-dot", in_source_folder, ["data", "import", "m.csv", "--out", "."], "is the current folder"),
    Row("out-is-the-source", nothing, ["data", "import", "{w}/src/m.csv", "--out", "{w}/src", "--force"], "holds the input"),
    Row("force-over-non-dataset", non_dataset_folder, ["data", "import", "{w}/src/m.csv", "--out", "{w}/results", "--force"],
        "not an avnbench dataset"),
    Row("score-out-below-a-file", nothing, [*SCORE, "--out", "{w}/ds/dataset.json/scores.csv"], "is a file, not a folder"),
    Row("preview-pixel-mm-tiny", nothing, [*PREVIEW, "--pixel-mm", "0.0001"], "over the limit of 4096"),
    Row("preview-existing-png", existing_png, PREVIEW, "exists; pass --force"),
    # run: refused before anything is written (no work folder, no MLflow store)
    Row("run-absolute-case-id", absolute_case_id, RUN, "case_id '/etc/passwd' must be"),
    Row("run-entry-without-files", entry_without_files, RUN, "not found (and 1 more); restore the file"),
    Row("run-case-in-no-val-fold", edit_split(_drop_from_val), RUN, "in no validation fold"),
    Row("run-case-in-two-val-folds", edit_split(_val_twice), RUN, "in several validation folds"),
    Row("run-unknown-case-in-split", edit_split(_unknown_case), RUN, "names cases not in the dataset: ghost"),
    Row("run-patient-leak", edit_split(_train_and_val), RUN, "leaks patient(s)"),
    Row("run-corrupt-splits-meta", corrupt_splits_meta, RUN, "invalid splits.meta.json"),
    Row("run-workdir-is-a-file", existing_file("work"), RUN, "is a file; pass a folder (--workdir)"),
    Row("run-unknown-tracking-scheme", nothing, [*RUN, "--tracking-uri", "foo://x"], "cannot open scheme 'foo'"),
    Row("run-corrupt-mlflow-db", existing_file("m.db", b"\x13garbage" * 500), RUN, "is not an MLflow SQLite store"),
    Row("run-set-unknown-field", nothing, [*RUN, "--set", "nope=1"], "no method of this command has a config field 'nope'"),
    Row("run-set-bad-value", nothing, [*RUN, "--set", "sigma_mm=abc"], "config field 'sigma_mm'"),
    Row("run-config-not-yaml", existing_file("o.yaml", b"a: [1,\n"), [*RUN, "--config", "{w}/o.yaml"], "not valid YAML or JSON"),
    Row("run-unknown-method", nothing, [*RUN, "--method", "no-such"], "unknown method 'no-such'. Available:"),
    # sources
    Row("dicom-missing-slice", dicom_missing_slice, [*IMPORT, *PHANTOM_GRID], "not evenly spaced"),
    Row("duplicate-csv-column", duplicate_column, IMPORT, "column 'side' appears twice"),
]


def _run_in_process(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _run_subprocess(args: list[str], env: Env) -> tuple[int, str, str]:
    kwargs: dict = {}
    if env.subprocess_as == "read-only" and os.geteuid() == 0:
        kwargs["preexec_fn"] = _without_permission_override  # root would ignore the permissions
    if env.subprocess_as == "fsize":
        # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG, as on a full disk.
        kwargs["preexec_fn"] = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (64_000, 64_000))
    done = subprocess.run(
        [sys.executable, "-m", "avnbench.cli", *args], capture_output=True, encoding="utf-8", errors="replace",
        cwd=env.cwd or env.w, timeout=120, env={**os.environ, "HOME": tempfile.gettempdir()}, **kwargs,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_hostile_input_is_one_line_and_changes_nothing(row: Row, base: Path, capsys, monkeypatch):
    w = Path(tempfile.mkdtemp(prefix=f"{row.id}-"))
    try:
        for part in ("ds", "src", "pred"):
            shutil.copytree(base / part, w / part, symlinks=True)
        with ExitStack() as stack:
            env = Env(w=w, mp=monkeypatch, stack=stack)
            row.build(env)
            args = [a.format(w=w, case=first_case(w)) for a in row.args]
            before = snapshot(w)
            if env.subprocess_as:
                code, out, err = _run_subprocess(args, env)
            else:
                monkeypatch.chdir(env.cwd or w)
                code, out, err = _run_in_process(args, capsys)
            after = snapshot(w)
        assert code == row.code, (code, out, err)
        assert "Traceback" not in out + err
        if row.stream == "err":
            lines = [line for line in err.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("error: "), err
            assert row.fragment in lines[0], (row.fragment, lines[0])
            for extra in row.also:
                assert extra in lines[0]
        else:
            for fragment in (row.fragment, *row.also):
                assert fragment in out, (fragment, out)
        assert after == before, {k: (before.get(k), after.get(k)) for k in set(before) | set(after) if before.get(k) != after.get(k)}
    finally:
        shutil.rmtree(w, ignore_errors=True)
