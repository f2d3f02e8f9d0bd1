"""The conformance kit (avnbench.testing.check_method) passes a real method and rejects broken ones.

Every broken method below fits trivially and breaks the protocol in ``predict`` in one way; the
kit runs it through the runner's own fold path, so each must end in a PluginError naming the
method, with no ``result.json`` left behind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avnbench.errors import ConfigError, PluginError
from avnbench.methods import ClassificationPrediction, Method, MethodCard, SegmentationPrediction
from avnbench.runner import RESULT_FILE, job_dir_for, plan_fold_jobs, run_fold_job
from avnbench.testing import check_method, registry_of


def _card(name: str, task: str = "segmentation") -> MethodCard:
    classes = ("A", "B", "C1", "C2") if task == "classification" else None
    return MethodCard(name=name, task=task, description="test method", citation="none", classes=classes)


def _zeros(case) -> SegmentationPrediction:
    return SegmentationPrediction(case_id=case.case_id, labels=np.zeros(case.geometry.shape_zyx, np.uint8))


def _segmenter(name: str, predict_one=None, predict_all=None) -> type[Method]:
    """A segmentation method whose ``predict`` yields ``predict_one(self, case)`` for each case,
    or whatever ``predict_all(self, cases)`` yields."""

    class Broken(Method):
        card = _card(name)

        def fit(self, train_cases, val_cases, workdir, device):
            (Path(workdir) / "fitted.txt").write_text(str(len(train_cases)))

        def predict(self, cases, workdir, device):
            if predict_all is not None:
                yield from predict_all(self, cases)
                return
            for case in cases:
                yield predict_one(self, case)

    Broken.__name__ = Broken.__qualname__ = name.title().replace("-", "")
    return Broken


def _classifier(name: str, n_probabilities: int) -> type[Method]:
    class Classifier(Method):
        card = _card(name, "classification")

        def fit(self, train_cases, val_cases, workdir, device):
            pass

        def predict(self, cases, workdir, device):
            for case in cases:
                p = np.full(n_probabilities, 1.0 / n_probabilities)
                yield ClassificationPrediction(case_id=case.case_id, probabilities=p)

    return Classifier


BROKEN = [
    # (method, what the error must say)
    (_segmenter("wrong-case-id", lambda self, c: _zeros(c).model_copy(update={"case_id": "nobody"})),
     "yielded case 'nobody'"),
    (_segmenter("wrong-shape", lambda self, c: SegmentationPrediction(
        case_id=c.case_id, labels=np.zeros((2, 2, 2), np.uint8))), "label map shape"),
    (_segmenter("too-few", predict_all=lambda self, cases: [_zeros(cases[0])]), "yielded 1 predictions for 2"),
    (_segmenter("too-many", predict_all=lambda self, cases: [_zeros(c) for c in cases] + [_zeros(cases[0])]),
     "more predictions than"),
    (_segmenter("wrong-type", lambda self, c: ClassificationPrediction(
        case_id=c.case_id, probabilities=np.array([1.0]))), "yielded ClassificationPrediction"),
    (_segmenter("label-three", lambda self, c: SegmentationPrediction(
        case_id=c.case_id, labels=np.full(c.geometry.shape_zyx, 3, np.uint8))), "invalid SegmentationPrediction"),
    (_segmenter("label-three-unvalidated", lambda self, c: SegmentationPrediction.model_construct(
        case_id=c.case_id, labels=np.full(c.geometry.shape_zyx, 3, np.uint8), probabilities=None)),
     r"integers in \{0, 1, 2\}"),
    (_segmenter("float-labels", lambda self, c: SegmentationPrediction.model_construct(
        case_id=c.case_id, labels=np.zeros(c.geometry.shape_zyx, np.float32), probabilities=None)),
     r"integers in \{0, 1, 2\}"),
    (_segmenter("reads-label-path", lambda self, c: (c.label_path, _zeros(c))[1]), "may not read the reference"),
    (_segmenter("reads-grade", lambda self, c: (c.meta.jic, _zeros(c))[1]), "may not read the reference"),
    (_segmenter("reads-label", lambda self, c: (c.read_label(), _zeros(c))[1]), "may not read the reference"),
    (_segmenter("reads-measurements", lambda self, c: (c.meta.measurements, _zeros(c))[1]),
     "may not read the reference"),
    (_segmenter("reads-dataset-dir", lambda self, c: (self.context.dataset_dir, _zeros(c))[1]),
     "may not read the reference"),
    (_classifier("wrong-class-count", 3), "3 probabilities for its 4 classes"),
]


@pytest.mark.parametrize("method_cls, message", BROKEN, ids=[m.card.name for m, _ in BROKEN])
def test_kit_rejects_a_broken_method(method_cls, message, tiny_dataset, tmp_path):
    with pytest.raises(PluginError, match=message) as raised:
        check_method(method_cls, tiny_dataset, tmp_path, preset="smoke")
    assert repr(method_cls.card.name) in str(raised.value), "the error names the method"
    assert len(str(raised.value).splitlines()) == 1
    job_dir = job_dir_for(tmp_path, tiny_dataset.name, method_cls.card.name, "smoke", 0)
    assert (job_dir / "fitted.txt").exists() or method_cls.card.task == "classification", "fit ran"
    assert not (job_dir / RESULT_FILE).exists()


def test_run_fold_job_rejects_a_broken_method_too(tiny_dataset, tmp_path):
    method_cls = BROKEN[0][0]
    registry = registry_of(method_cls)
    job = plan_fold_jobs(method_cls.card.name, tiny_dataset.root, tmp_path, preset="smoke", folds=[1],
                         device="cpu", registry=registry).jobs[0]
    with pytest.raises(PluginError, match="yielded case 'nobody'"):
        run_fold_job(job, registry)
    assert not (job.job_dir / RESULT_FILE).exists()


def test_a_label_next_to_the_staged_image_does_not_exist(tiny_dataset, tmp_path):
    """Guessing the dataset layout from the image path leads nowhere: the image is staged."""
    seen = []

    def guess(self, case):
        guessed = Path(case.image_path).parent.parent / "labelsTr" / f"{case.case_id}.nii.gz"
        seen.append((guessed, guessed.exists()))
        return _zeros(case)

    check_method(_segmenter("guesses-the-label", guess), tiny_dataset, tmp_path, preset="smoke")
    assert seen and not any(exists for _, exists in seen)
    assert all(Path(tiny_dataset.root).resolve() not in g.resolve().parents for g, _ in seen)


def test_a_working_method_passes_and_its_predictions_come_back(tiny_dataset, tmp_path):
    method_cls = _segmenter("all-background", lambda self, case: _zeros(case))
    predictions = check_method(method_cls, tiny_dataset, tmp_path, preset="smoke", fold=2)
    folds_val = plan_fold_jobs("all-background", tiny_dataset.root, tmp_path, preset="smoke", folds=[2],
                               device="cpu", registry=registry_of(method_cls)).jobs[0].val_ids
    assert [p.case_id for p in predictions] == folds_val
    job_dir = job_dir_for(tmp_path, tiny_dataset.name, "all-background", "smoke", 2)
    assert (job_dir / RESULT_FILE).exists()
    assert sorted(p.name for p in (job_dir / "predictions").iterdir()) == sorted(f"{c}.nii.gz" for c in folds_val)
    assert not (job_dir / "inputs").exists(), "staged images are removed after predicting"


def test_conformance_kit_passes_the_threshold_baseline(tiny_dataset, tmp_path):
    from avnbench_threshold_baseline.method import ThresholdBaseline

    predictions = check_method(ThresholdBaseline, tiny_dataset, tmp_path, preset="smoke", fold=1)
    assert len(predictions) == 2
    assert all(int((p.labels > 0).sum()) > 1000 for p in predictions), "a femoral head in every case"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"no_such_option": 1}, "no_such_option"),
        ({"max_training_cases": 0}, "max_training_cases"),
    ],
)
def test_kit_rejects_bad_config_overrides(overrides, message, tiny_dataset, tmp_path):
    from avnbench_threshold_baseline.method import ThresholdBaseline

    with pytest.raises(ConfigError, match=message):
        check_method(ThresholdBaseline, tiny_dataset, tmp_path, preset="smoke", **overrides)
