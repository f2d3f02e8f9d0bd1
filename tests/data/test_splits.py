import json

import pytest

from avnbench.data.dataset import load_dataset
from avnbench.errors import ConfigError, DataError
from avnbench.data.splits import carve_validation, make_splits, read_splits, split_hash, write_splits


def _patients(dataset, ids):
    return {dataset[c].patient_id for c in ids}


def test_folds_are_grouped_by_patient_and_cover_every_case(tiny_dataset):
    folds, meta = read_splits(tiny_dataset)
    assert len(folds) == meta.folds
    val_ids = [c for f in folds for c in f.val]
    assert sorted(val_ids) == sorted(c.case_id for c in tiny_dataset.cases)
    for f in folds:
        assert not _patients(tiny_dataset, f.train) & _patients(tiny_dataset, f.val)
        assert set(f.train) | set(f.val) == {c.case_id for c in tiny_dataset.cases}


def test_split_is_seeded_and_hashed(tiny_dataset):
    a, _ = make_splits(tiny_dataset.cases, 3, seed=1)
    b, _ = make_splits(tiny_dataset.cases, 3, seed=1)
    c, _ = make_splits(tiny_dataset.cases, 3, seed=2)
    assert split_hash(a) == split_hash(b)
    assert [f.val for f in a] == [f.val for f in b]
    assert split_hash(a) != split_hash(c) or [f.val for f in a] == [f.val for f in c]


def test_stratified_by_steinberg_when_grades_exist(tiny_dataset):
    _, strat = make_splits(tiny_dataset.cases, 2, seed=0)
    assert strat == "steinberg"


def test_more_folds_than_patients_is_refused(tiny_dataset):
    n_patients = len({c.patient_id for c in tiny_dataset.cases})
    with pytest.raises(ConfigError, match="patients"):
        make_splits(tiny_dataset.cases, n_patients + 1)


def test_hand_edited_split_that_leaks_a_patient_is_refused(tiny_dataset, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_dataset.root, copy)
    dataset = load_dataset(copy)
    folds = json.loads(dataset.splits_path.read_text())
    moved = folds[0]["val"][0]
    folds[0]["train"].append(moved)
    dataset.splits_path.write_text(json.dumps(folds))
    same_patient = [c.case_id for c in dataset.cases if c.patient_id == dataset[moved].patient_id]
    if len(same_patient) == 1:  # a one-hip patient: make the leak through a duplicate id instead
        folds[0]["val"].append(folds[0]["train"][0])
        dataset.splits_path.write_text(json.dumps(folds))
    with pytest.raises(DataError, match="leaks patient"):
        read_splits(dataset)


def test_existing_split_is_kept_unless_forced(tiny_dataset, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_dataset.root, copy)
    dataset = load_dataset(copy)
    before = dataset.splits_path.read_bytes()
    with pytest.raises(ConfigError, match="--force"):
        write_splits(dataset, 2, seed=5)
    assert dataset.splits_path.read_bytes() == before
    write_splits(dataset, 2, seed=5, force=True)
    assert len(read_splits(dataset)[0]) == 2


def test_internal_validation_is_carved_by_patient(tiny_dataset):
    folds, _ = read_splits(tiny_dataset)
    train = tiny_dataset.subset(folds[0].train)
    fit, val = carve_validation(train, 0.3, seed=0)
    assert val and fit
    assert {c.patient_id for c in fit}.isdisjoint({c.patient_id for c in val})
    assert {c.case_id for c in fit + val} == set(folds[0].train)


def _move_first_val_case(folds, to_fold):
    case = folds[0]["val"][0]
    folds[to_fold]["val"].append(case)
    if case in folds[to_fold]["train"]:
        folds[to_fold]["train"].remove(case)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda f: f[0]["val"].pop(), "in no validation fold"),
        (lambda f: _move_first_val_case(f, 1), "in several validation folds"),
        (lambda f: f[0]["train"].append("ghost"), "names cases not in the dataset: ghost"),
        (lambda f: f[0]["train"].append(f[0]["val"][0]), "leaks patient"),
        (lambda f: f.clear(), "no folds"),
    ],
)
def test_validate_split_refuses_unusable_splits(tiny_dataset, edit, expected):
    from avnbench.data.splits import Fold, validate_split

    folds = json.loads(tiny_dataset.splits_path.read_text())
    validate_split(tiny_dataset, [Fold.model_validate(f) for f in folds])  # the real split is fine
    edit(folds)
    with pytest.raises(DataError, match=expected) as info:
        validate_split(tiny_dataset, [Fold.model_validate(f) for f in folds])
    assert "splits_final.json" in str(info.value)


def test_corrupt_splits_meta_is_one_line(tiny_dataset, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_dataset.root, copy)
    (copy / "splits.meta.json").write_text("{")
    with pytest.raises(DataError, match=r"splits.meta.json: invalid splits.meta.json .*--force"):
        read_splits(load_dataset(copy))
