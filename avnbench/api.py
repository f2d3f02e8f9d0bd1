"""The public API for plugin authors: everything a method plugin may import, in one place.

A plugin imports from here (and from :mod:`avnbench.training` for torch methods, and
:mod:`avnbench.testing` in its tests) and from nowhere else in avnbench; the rest of the core
may change between versions without notice::

    from avnbench.api import Method, MethodCard, MethodConfig, SegmentationPrediction, hookimpl
"""

from avnbench.data.dataset import (
    FILE_ENDING,
    JIC_TYPES,
    LABELS,
    Case,
    CaseMeta,
    Dataset,
    Geometry,
    Landmarks,
    load_dataset,
)
from avnbench.data.splits import Fold, read_splits, split_hash
from avnbench.errors import ConfigError, DataError, PluginError
from avnbench.evaluation.grading import jic_boundaries_mm, jic_type
from avnbench.evaluation.localization import heatmap_top_decile_on_necrosis
from avnbench.evaluation.metrics import MetricDef
from avnbench.evaluation.surface import dice
from avnbench.evaluation.slices import PlaneSlice, mid_coronal_slice
from avnbench.hookspecs import hookimpl
from avnbench.methods import (
    ClassificationPrediction,
    JobContext,
    JobResources,
    Method,
    MethodCard,
    MethodConfig,
    PredictCase,
    PrepareContext,
    SegmentationPrediction,
    TrainingEvent,
    TrainingLog,
    jic_classes,
)

__all__ = [
    "FILE_ENDING", "JIC_TYPES", "LABELS", "Case", "CaseMeta", "ClassificationPrediction",
    "ConfigError", "DataError", "Dataset", "Fold", "Geometry", "JobContext", "JobResources", "Landmarks", "Method",
    "MethodCard", "MethodConfig", "MetricDef", "PlaneSlice", "PluginError", "PredictCase", "PrepareContext",
    "SegmentationPrediction", "TrainingEvent", "TrainingLog", "dice", "heatmap_top_decile_on_necrosis",
    "hookimpl", "jic_boundaries_mm",
    "jic_classes", "jic_type", "load_dataset", "mid_coronal_slice", "read_splits", "split_hash",
]
