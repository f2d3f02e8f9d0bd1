"""What a (method, fold) job is, and the ``result.json`` it leaves behind.

A finished job's folder holds ``result.json``: its scores *and* the inputs they came from (run
key, dataset fingerprint, split hash, fold ids, the plugin's and avnbench's versions) plus a
sha256 digest of its own content. A later run reuses it only if the digest matches and every
recorded input equals the new job's, so a hand-edited file or one left by other code is
recomputed rather than reported.

A *test job* (``avnbench run --data A --test-data B``) is a fold job whose fit is the ordinary
fold-k job on A (its folder ``fit_dir``) and whose cases are every case of another dataset B: it
records B's name, fingerprint and case ids as inputs (so it is never taken for an in-domain result,
nor one for it) and the digest of the fit's ``result.json`` it predicted with. In-domain jobs leave
those fields None, and then they are left out of the digest and the run key, which are therefore
the same as before test jobs existed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from avnbench.data.dataset import Case
from avnbench.errors import PluginError
from avnbench.methods import ClassificationPrediction, SegmentationPrediction

RESULT_FILE = "result.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CodeVersions(_Strict):
    """The code a job ran: avnbench (version, git commit in a checkout) and the method's plugin."""

    avnbench_version: str
    avnbench_commit: str | None
    plugin_distribution: str | None
    plugin_version: str | None


@functools.cache
def avnbench_commit() -> str | None:
    """``git rev-parse HEAD`` of the avnbench source tree, or None outside a git checkout.

    Asked once per process. Only a tree whose top holds both the ``avnbench`` package and
    ``.git`` counts, so an installed copy inside some other repository reports None.
    """
    import avnbench

    root = Path(avnbench.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit or None


def code_versions(entry: Any) -> CodeVersions:
    """The :class:`CodeVersions` of a registered method (``entry`` from ``Registry.get``)."""
    from avnbench import __version__

    return CodeVersions(
        avnbench_version=__version__,
        avnbench_commit=avnbench_commit(),
        plugin_distribution=getattr(entry, "distribution", None),
        plugin_version=getattr(entry, "version", None),
    )


def run_key_for(
    method: str, preset: str, config: dict[str, Any], fingerprint: str, split_hash: str, code: CodeVersions,
    test_fingerprint: str | None = None,
) -> str:
    """A short hash naming one (method, resolved config, dataset, split, code versions) combination;
    ``test_fingerprint``: the dataset a model trained on the folds is tested on (None: its own folds)."""
    parts: list[Any] = [method, preset, config, fingerprint, split_hash, code.model_dump(mode="json")]
    if test_fingerprint is not None:  # appended only then, so in-domain keys stay what they were
        parts.append({"test_dataset_fingerprint": test_fingerprint})
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class FoldJob(_Strict):
    """Everything one (method, fold) job needs; serialisable, so it can run anywhere."""

    method: str
    preset: str
    config: dict[str, Any]
    dataset_dir: Path
    dataset_fingerprint: str
    fold: int
    train_ids: list[str]
    val_ids: list[str]
    device: Literal["cpu", "cuda"]
    job_dir: Path
    shared_dir: Path
    split_hash: str
    splits_file: Path
    run_key: str
    seed: int
    avnbench_version: str
    avnbench_commit: str | None
    plugin_distribution: str | None
    plugin_version: str | None
    # a test job only (see the module docstring): the dataset tested on and the fit it reuses
    test_dataset_dir: Path | None = None
    test_dataset_name: str | None = None
    test_dataset_fingerprint: str | None = None
    test_ids: list[str] | None = None
    fit_dir: Path | None = None
    fit_run_key: str | None = None

    @property
    def is_test(self) -> bool:
        """True for a test job (a fold's model predicting every case of another dataset)."""
        return self.test_ids is not None

    def fit_job(self) -> "FoldJob":
        """The ordinary fold job whose fit a test job predicts with (itself for a fold job)."""
        if not self.is_test:
            return self
        return self.model_copy(update={"job_dir": self.fit_dir, "run_key": self.fit_run_key,
                                       **dict.fromkeys(TEST_FIELDS)})


#: The fields only a test job has; None (and out of the digest) for an in-domain job.
TEST_FIELDS = ("test_dataset_dir", "test_dataset_name", "test_dataset_fingerprint", "test_ids", "fit_dir",
               "fit_run_key")


class FoldInputs(_Strict):
    """What a fold's result was computed from; a result is reused only for equal inputs."""

    run_key: str
    method: str
    preset: str
    fold: int
    dataset_fingerprint: str
    split_hash: str
    train_ids: list[str]
    val_ids: list[str]
    avnbench_version: str
    avnbench_commit: str | None
    plugin_distribution: str | None
    plugin_version: str | None
    test_dataset_name: str | None = None
    test_dataset_fingerprint: str | None = None
    test_ids: list[str] | None = None

    @classmethod
    def of(cls, job: FoldJob) -> "FoldInputs":
        """The inputs of ``job`` (the same fields, copied)."""
        return cls.model_validate(job.model_dump(include=set(cls.model_fields)))

    def inputs(self) -> "FoldInputs":
        """Just the input fields of this object (of a :class:`FoldResult`, say)."""
        return FoldInputs.model_validate(self.model_dump(include=set(FoldInputs.model_fields)))


class FoldResult(FoldInputs):
    """What a finished job leaves in ``job_dir/result.json``: its inputs, scores and a digest."""

    rows: list[dict[str, Any]]
    fit_seconds: float
    predict_seconds: float
    n_cases: int
    internal_val_ids: list[str]
    fit_digest: str | None = None  # a test job's: the digest of the fold result whose fit it used
    digest: str = ""

    @property
    def predict_seconds_per_case(self) -> float:
        return self.predict_seconds / max(self.n_cases, 1)

    def content_digest(self) -> str:
        """sha256 (hex) of the canonical JSON of every field but ``digest``.

        Computed on the JSON form (NaN becomes null there), so a result read back from its file
        has the digest it was written with.
        """
        unset = {n for n in ("test_dataset_name", "test_dataset_fingerprint", "test_ids", "fit_digest")
                 if getattr(self, n) is None}  # an in-domain result digests as it always did
        content = json.loads(self.model_dump_json(exclude={"digest"} | unset))
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def sealed(self) -> "FoldResult":
        """A copy carrying the digest of its content."""
        return self.model_copy(update={"digest": self.content_digest()})


def save_result(result: FoldResult, job_dir: Path) -> Path:
    """Write ``result`` with its digest to ``job_dir/result.json``, atomically (written last,
    its presence marks the fold as finished)."""
    path = Path(job_dir) / RESULT_FILE
    tmp = path.with_name(RESULT_FILE + ".tmp")
    tmp.write_text(result.sealed().model_dump_json(indent=1), encoding="utf-8")
    tmp.replace(path)
    return path


def load_finished(job: FoldJob, warn: Callable[[str], None] | None = None) -> FoldResult | None:
    """The job's earlier result if it is intact and was computed from the job's inputs, else None.

    A ``result.json`` that is unreadable, edited after it was written (digest mismatch) or
    computed from other inputs (another version, dataset, split ...) is not reused; ``warn`` then
    gets one line naming the file and the reason.
    """
    path = Path(job.job_dir) / RESULT_FILE
    if not path.exists():
        return None
    say = warn or (lambda message: None)
    try:
        result = FoldResult.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValidationError) as e:
        reason = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
        say(f"{path} is not a result this avnbench wrote ({reason}); recomputing fold {job.fold}")
        return None
    if not result.digest or result.digest != result.content_digest():
        say(f"{path} was changed after it was written (its digest does not match); recomputing fold {job.fold}")
        return None
    wanted, recorded = FoldInputs.of(job).model_dump(), result.inputs().model_dump()
    # the run key differs whenever anything else does: name the specific input first
    changed = sorted((n for n in wanted if wanted[n] != recorded[n]), key=lambda n: n == "run_key")
    if changed:
        name = changed[0]
        say(
            f"{path} was computed with other inputs ({name}: {_short(recorded[name])}, now "
            f"{_short(wanted[name])}); recomputing fold {job.fold}"
        )
        return None
    return result


# --- checking what predict yields -------------------------------------------------------------


def guarded_predictions(method: str, predict: Callable[[], Iterable[Any]]) -> Iterator[Any]:
    """The predictions of ``predict()``; reading what a :class:`PredictCase` lacks (AttributeError)
    or building an invalid prediction (ValidationError) inside it becomes a PluginError."""
    try:
        iterator = iter(predict())
    except (AttributeError, ValidationError) as e:
        raise _predict_error(method, e) from e
    while True:
        try:
            prediction = next(iterator)
        except StopIteration:
            return
        except (AttributeError, ValidationError) as e:
            raise _predict_error(method, e) from e
        yield prediction


def _predict_error(method: str, e: Exception) -> PluginError:
    if isinstance(e, ValidationError):
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return PluginError(
            f"method {method!r}: predict built an invalid {e.title} ({where + ': ' if where else ''}{first['msg']})"
        )
    return PluginError(
        f"method {method!r}: predict may not read the reference ({e}); it gets PredictCase cases "
        "(image, geometry, identity) and no context, only what fit left in the job folder"
    )


def check_prediction(
    method: str, task: str, prediction: object, case: Case, classes: Sequence[str] | None = None
) -> None:
    """A PluginError unless ``prediction`` is the right type, for ``case``, and well formed: a
    label map on the case's grid in {0, 1, 2}, or one probability per class of ``classes``."""
    expected = SegmentationPrediction if task == "segmentation" else ClassificationPrediction
    if not isinstance(prediction, expected):
        raise PluginError(f"method {method!r} ({task}) yielded {type(prediction).__name__}, not {expected.__name__}")
    if prediction.case_id != case.case_id:
        raise PluginError(
            f"method {method!r} yielded case {prediction.case_id!r} where {case.case_id!r} was expected"
        )
    if isinstance(prediction, SegmentationPrediction):
        labels = prediction.labels  # checked again: model_construct skips the model's validator
        if not isinstance(labels, np.ndarray) or labels.shape != case.meta.geometry.shape_zyx:
            raise PluginError(
                f"method {method!r}: case {case.case_id} label map shape {getattr(labels, 'shape', None)} "
                f"!= image shape {case.meta.geometry.shape_zyx}"
            )
        if not np.issubdtype(labels.dtype, np.integer) or labels.size and (labels.min() < 0 or labels.max() > 2):
            raise PluginError(
                f"method {method!r}: case {case.case_id} label map must be integers in {{0, 1, 2}}"
            )
    if isinstance(prediction, ClassificationPrediction) and classes is not None:
        if np.shape(prediction.probabilities) != (len(classes),):
            raise PluginError(
                f"method {method!r}: case {case.case_id} has {np.size(prediction.probabilities)} "
                f"probabilities for its {len(classes)} classes {list(classes)}"
            )


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
