"""The built-in phantom's cache: two commands started at once both end with the same dataset."""

import threading

from avnbench.cli.run import _generate_once
from avnbench.data.dataset import load_dataset

SHAPE = (40, 80, 80)


def test_two_generations_at_once_leave_one_dataset_and_no_partial_folder(tmp_path):
    folder = tmp_path / "datasets" / "phantom"
    errors: list[BaseException] = []

    def generate() -> None:
        try:
            _generate_once(folder, 2, SHAPE, None)
        except BaseException as error:  # noqa: BLE001 - the test reports it below
            errors.append(error)

    threads = [threading.Thread(target=generate) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(load_dataset(folder)) == 2
    assert sorted(p.name for p in folder.parent.iterdir()) == ["phantom"]


def test_a_dataset_already_in_place_is_kept(tmp_path):
    folder = tmp_path / "phantom"
    _generate_once(folder, 2, SHAPE, None)
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    _generate_once(folder, 2, SHAPE, None)
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phantom"]
