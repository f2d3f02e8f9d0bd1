"""The method protocol every plugin implements (DESIGN.md "Method plugins").

A method is a class with a :class:`MethodCard`, a pydantic ``Config`` (a :class:`MethodConfig`
subclass with ``smoke``/``quick``/``paper`` presets) and two methods, ``fit`` and ``predict``.
The core does everything around them: data handling, scoring and tracking. Heavy imports
(torch, nnunetv2, monai) belong inside ``fit``/``predict`` so that listing methods stays fast.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from avnbench.data.dataset import JIC_TYPES, Case, Geometry, Landmarks
from avnbench.errors import ConfigError

Task = Literal["segmentation", "classification"]
PRESETS = ("smoke", "quick", "paper")
#: What a fit may read from the reference besides the images: the label maps ("masks"), the
#: reference grades ("grades") or the reference-derived anatomical landmarks ("landmarks").
TrainingInput = Literal["masks", "grades", "landmarks"]


class MethodCard(BaseModel):
    """What a method is: shown by ``avnbench methods show`` and recorded with every run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="registry key, kebab-case")
    task: Task
    description: str
    citation: str
    classes: tuple[str, ...] | None = Field(
        default=None,
        description="classification only: the class names, in the order of predicted probabilities",
    )
    reference: str | None = Field(default=None, description="URL of the paper or code")
    builds_on: tuple[str, ...] = Field(
        default=(),
        description="methods whose same-fold results this one reuses (an ensemble: its members); "
        "the runner runs them first, in the same plan",
    )
    uses_landmarks: bool = Field(
        default=False,
        description="predict needs anatomical landmarks; it then gets only landmarks that did "
        "not come from the reference label, and the method's leaderboard rows say so",
    )
    predicts: str | None = Field(
        default=None,
        description="classification only: the reference grade the classes are scored against "
        "(e.g. 'jic')",
    )
    trains_on: tuple[TrainingInput, ...] = Field(
        default=(),
        description="what fit may read from the reference besides the images (masks, grades, "
        "landmarks); empty: the task's own target (segmentation: masks, classification: grades). "
        "A Config narrows it per setting with MethodConfig.trains_on",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_training_inputs(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("trains_on"):
            data = {**data, "trains_on": ("masks",) if data.get("task") == "segmentation" else ("grades",)}
        return data

    @model_validator(mode="after")
    def _classes_for_classifiers(self) -> "MethodCard":
        if self.task == "classification" and not self.classes:
            raise ValueError("a classification method must name its classes")
        return self


class MethodConfig(BaseModel):
    """Base of every method's ``Config``: strict, with named presets.

    Subclasses declare their hyper-parameters as fields (defaults = the ``quick`` preset is a
    good choice) and ``PRESETS``: a mapping from preset name to the field values it overrides.
    """

    model_config = ConfigDict(extra="forbid")

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"smoke": {}, "quick": {}, "paper": {}}

    seed: int = Field(default=0, description="random seed of everything the method draws")

    def trains_on(self, card: "MethodCard") -> tuple[TrainingInput, ...]:
        """What a fit with this configuration reads from the reference (default: the card's
        ``trains_on``); override where a setting turns a kind of supervision on or off. Recorded
        with every run, and what the leaderboard's row labels say."""
        return card.trains_on

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "MethodConfig":
        """The config of preset ``name`` with ``overrides`` applied on top."""
        if name not in cls.PRESETS:
            raise ConfigError(f"unknown preset {name!r}. Available: {', '.join(cls.PRESETS)}")
        return cls.model_validate({**cls.PRESETS[name], **overrides})


class SegmentationPrediction(BaseModel):
    """A predicted label map (and optionally per-class probabilities) for one case."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    case_id: str
    labels: np.ndarray = Field(description="uint8 (z, y, x) in {0, 1, 2}, the image's grid")
    probabilities: np.ndarray | None = Field(
        default=None, description="float (3, z, y, x): background, vital, necrosis; sums to 1"
    )

    @model_validator(mode="after")
    def _check(self) -> "SegmentationPrediction":
        if self.labels.ndim != 3:
            raise ValueError(f"labels must be 3-D (z, y, x), got shape {self.labels.shape}")
        if not np.issubdtype(self.labels.dtype, np.integer):
            raise ValueError(f"labels must be integers, got {self.labels.dtype}")
        if self.labels.size and int(self.labels.max()) > 2 or int(self.labels.min()) < 0:
            raise ValueError("labels must lie in {0, 1, 2}")
        if self.probabilities is not None:
            p = self.probabilities
            if p.shape != (3, *self.labels.shape):
                raise ValueError(f"probabilities shape {p.shape} != (3, *labels.shape)")
        return self


class ClassificationPrediction(BaseModel):
    """Class probabilities for one case (order: the method card's ``classes``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    case_id: str
    probabilities: np.ndarray = Field(description="float (K,), sums to 1")
    heatmap: np.ndarray | None = Field(
        default=None,
        description="optional 2-D class-activation map on the mid-coronal slice grid "
        "(avnbench.evaluation.slices.mid_coronal_slice), values >= 0",
    )

    @model_validator(mode="after")
    def _check(self) -> "ClassificationPrediction":
        p = np.asarray(self.probabilities, dtype=float)
        if p.ndim != 1 or not np.all(np.isfinite(p)) or abs(p.sum() - 1.0) > 1e-3:
            raise ValueError(f"probabilities must be a finite 1-D vector summing to 1, got {p}")
        if self.heatmap is not None and self.heatmap.ndim != 2:
            raise ValueError("heatmap must be 2-D")
        return self


Prediction = SegmentationPrediction | ClassificationPrediction


class PredictCase(BaseModel):
    """A case as ``predict`` sees it: the image, its grid and the case's identity — nothing else.

    No label path, no reference grade, no measurement and nothing computed from the reference
    label. ``landmarks`` is set only for methods whose card says ``uses_landmarks`` and only when
    the case's landmarks did not come from its label map (the phantom's anatomy, or landmarks a
    manifest supplies); otherwise it is None. ``image_path`` points at a copy of the image
    staged for the job, not into the dataset folder.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    case_id: str
    patient_id: str
    side: Literal["L", "R"]
    image_path: Path
    geometry: Geometry
    landmarks: Landmarks | None = None

    @classmethod
    def of(cls, case: Case, *, with_landmarks: bool, image_path: Path | None = None) -> "PredictCase":
        """The sealed view of ``case``: landmarks only if asked for and not estimated from the
        reference label; ``image_path`` (a staged copy) defaults to the case's own image."""
        landmarks = case.meta.landmarks
        if not with_landmarks or landmarks is None or landmarks.estimated:
            landmarks = None
        return cls(
            case_id=case.case_id,
            patient_id=case.meta.patient_id,
            side=case.meta.side,
            image_path=Path(image_path) if image_path is not None else case.image_path,
            geometry=case.meta.geometry,
            landmarks=landmarks,
        )

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel spacing in mm, array order (z, y, x)."""
        return self.geometry.spacing_zyx

    def read_image(self):
        """The image as a SimpleITK image (through the project's one checked reader)."""
        from avnbench.data.imageio import read_image

        return read_image(self.image_path)

    def image_array(self) -> np.ndarray:
        """Image intensities, float32, array order (z, y, x)."""
        import SimpleITK as sitk

        return sitk.GetArrayFromImage(self.read_image()).astype(np.float32, copy=False)


class JobContext(BaseModel):
    """What the runner tells a method about the job it runs in (one method, one fold).

    Methods that need nothing of it may ignore it. ``shared_dir`` is a folder shared by all jobs
    on the same dataset and split within one work folder: a method may keep artefacts there that
    other jobs reuse (nnU-Net's preprocessing, members of an ensemble), keyed so that different
    presets or folds never collide.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset_dir: Path
    dataset_name: str
    dataset_fingerprint: str
    splits_file: Path
    split_hash: str
    fold: int
    preset: str
    seed: int
    shared_dir: Path
    code: dict[str, str] = Field(
        default_factory=dict,
        description="versions of the code running the job (avnbench, its git commit, the plugin): "
        "key artefacts shared across jobs by it, so that changed code recomputes them",
    )


class TrainingEvent(BaseModel):
    """One report from a training method: an epoch finished, or one point of a curve.

    ``epoch`` is 1-based; ``total`` is the number of epochs planned (None for a lone curve point);
    ``values`` are losses and validation scores by name (logged as ``train/<name>``);
    ``seconds`` is the time since the first report of this fit; ``kind`` says whether it is an
    epoch report (:meth:`TrainingLog.epoch`) or a lone curve point (:meth:`TrainingLog.metric`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["epoch", "metric"] = "epoch"
    epoch: int
    total: int | None = None
    values: dict[str, float] = Field(default_factory=dict)
    seconds: float = 0.0


TrainingListener = Callable[[TrainingEvent], None]


class JobResources(BaseModel):
    """What one job of a method asks an executor for (Ray schedules by these; the local
    executor runs one job at a time and ignores them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_cpus: float = Field(default=1, ge=0, description="CPU cores the job keeps busy")
    num_gpus: float = Field(default=0, ge=0, description="GPUs; 1 pins the job to one GPU (CUDA_VISIBLE_DEVICES)")
    memory_mb: int = Field(default=1024, ge=0, description="estimate of the job's peak memory, MiB")


class PrepareContext(BaseModel):
    """What :meth:`Method.prepare` is told: the dataset, its split and the shared folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset_dir: Path
    dataset_name: str
    dataset_fingerprint: str
    splits_file: Path
    split_hash: str
    preset: str
    seed: int
    shared_dir: Path


class TrainingLog:
    """The one callback through which a method reports training, plus files for its MLflow run.

    Every report is written to ``workdir/training_log.jsonl`` (so a fold's curves survive the
    process) and handed to ``listener``, which the runner sets: it shows epochs, losses and an ETA
    in the terminal and logs the curves live to the fold's MLflow run. A method never touches the
    tracking store itself.
    """

    def __init__(self, workdir: Path, listener: TrainingListener | None = None):
        self.workdir = Path(workdir)
        self.path = self.workdir / "training_log.jsonl"
        self.artifact_dir = self.workdir / "artifacts"
        self.listener = listener
        self._t0: float | None = None

    def _elapsed(self) -> float:
        import time

        now = time.perf_counter()
        if self._t0 is None:
            self._t0 = now
        return now - self._t0

    def epoch(self, epoch: int, total: int | None = None, **values: float) -> None:
        """Report a finished epoch (1-based) of ``total``, with its losses and validation scores,
        e.g. ``log.epoch(3, 50, loss=0.41, val_dice=0.72)``."""
        finite = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            for name, value in finite.items():
                f.write(json.dumps({"name": name, "value": value, "step": int(epoch)}) + "\n")
        if self.listener is not None:
            self.listener(TrainingEvent(epoch=int(epoch), total=total, values=finite, seconds=self._elapsed()))

    def metric(self, name: str, value: float, step: int) -> None:
        """Record one point of a curve, e.g. ``metric("train_loss", 0.31, step=epoch)``."""
        value = float(value)
        if not math.isfinite(value):
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"name": name, "value": value, "step": int(step)}) + "\n")
        if self.listener is not None:
            self.listener(TrainingEvent(kind="metric", epoch=int(step), values={name: value}, seconds=self._elapsed()))

    def param(self, name: str, value: Any) -> None:
        """Record a value the method chose during fit (a learned threshold, a cut-off ...)."""
        path = self.workdir / "training_params.json"
        self.workdir.mkdir(parents=True, exist_ok=True)
        params = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        params[name] = value
        path.write_text(json.dumps(params, indent=2, default=str), encoding="utf-8")

    def artifact(self, name: str) -> Path:
        """A path under ``artifacts/`` to write a file to; it becomes an MLflow artifact."""
        path = self.artifact_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every recorded point, in order."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


class Method(ABC):
    """Base class of every benchmark method.

    Subclasses set ``card`` and ``Config`` and implement ``fit`` and ``predict``. For each
    (method, fold) job the runner creates an instance, sets ``context`` and ``log`` and calls
    ``fit`` once; then it calls ``predict`` once on a *fresh* instance whose ``context`` is None
    (possibly in another process): ``predict`` must rely only on ``workdir`` and its cases.
    """

    card: ClassVar[MethodCard]
    Config: ClassVar[type[MethodConfig]] = MethodConfig

    def __init__(self, config: MethodConfig | None = None):
        self.config = config if config is not None else self.Config.preset("quick")
        self.context: JobContext | None = None
        self.log: TrainingLog | None = None

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> "Method":
        """An instance configured by a named preset."""
        return cls(cls.Config.preset(preset, **overrides))

    @classmethod
    def resources(cls, preset: str, device: str, config: MethodConfig | None = None) -> JobResources:
        """What one fold job asks the executor for, given its preset, device and resolved config
        (None: the preset's). Default: one core, one GPU on ``cuda`` (none on ``cpu``), 1 GiB; a
        method that needs more (or less) overrides this."""
        return JobResources(num_cpus=1, num_gpus=1 if device == "cuda" else 0, memory_mb=1024)

    @classmethod
    def prepare(cls, context: PrepareContext, config: MethodConfig, device: str) -> None:
        """Optional: work done once per dataset before any fold job of the method starts, e.g.
        nnU-Net's fingerprint, plans and preprocessing into ``context.shared_dir``.

        The planner runs it as its own step (on a worker, under ``--executor ray``) only when some
        fold is computed; methods that inherit the same ``prepare`` share one step. It must be
        idempotent (a later fit may still check its output) and must not touch job folders.
        The default does nothing and adds no step.
        """

    @classmethod
    def has_prepare(cls) -> bool:
        """True when the class (or a base other than :class:`Method`) overrides :meth:`prepare`."""
        return cls.prepare.__func__ is not Method.prepare.__func__

    @abstractmethod
    def fit(
        self, train_cases: Sequence[Case], val_cases: Sequence[Case], workdir: Path, device: str
    ) -> None:
        """Train on ``train_cases``; ``val_cases`` (carved out of the fold's training cases,
        never the fold's validation cases) are for model selection. Keep everything in
        ``workdir``. ``device`` is ``"cuda"`` or ``"cpu"``."""

    @abstractmethod
    def predict(
        self, cases: Sequence[PredictCase], workdir: Path, device: str
    ) -> Iterator[SegmentationPrediction | ClassificationPrediction]:
        """Yield one prediction per case, in order, using only what ``fit`` left in ``workdir``.
        The cases are :class:`PredictCase`: image, grid and identity, no reference."""


def jic_classes() -> tuple[str, ...]:
    """The JIC types in ordinal order, the class order a JIC classifier should use."""
    return JIC_TYPES


def validate_predictions_shape(preds: Sequence[Prediction], cases: Sequence[Case]) -> None:
    """Check a method returned exactly one prediction per case, matching the image grids."""
    got = [p.case_id for p in preds]
    want = [c.case_id for c in cases]
    if got != want:
        raise ConfigError(f"method predicted cases {got}, expected {want}")
    for p, c in zip(preds, cases):
        if isinstance(p, SegmentationPrediction) and p.labels.shape != c.meta.geometry.shape_zyx:
            raise ConfigError(
                f"case {c.case_id}: predicted label shape {p.labels.shape} != image shape "
                f"{c.meta.geometry.shape_zyx}"
            )
