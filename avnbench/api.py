"""The public API for plugin authors: everything a method plugin may import, in one place.

A plugin imports from here (and from :mod:`avnbench.training` for torch methods, and
:mod:`avnbench.testing` in its tests) and from nowhere else in avnbench; the rest of the core
may change between versions without notice::

    from avnbench.api import Method, MethodCard, MethodConfig, SegmentationPrediction, hookimpl
"""

from avnbench.data.dataset import FILE_ENDING, JIC_TYPES, LABELS, Case, CaseMeta, Geometry, Landmarks
from avnbench.errors import ConfigError, DataError, PluginError
from avnbench.hookspecs import hookimpl
from avnbench.methods import (
    ClassificationPrediction,
    JobContext,
    Method,
    MethodCard,
    MethodConfig,
    PredictCase,
    SegmentationPrediction,
    TrainingEvent,
    TrainingLog,
    jic_classes,
)

__all__ = [
    "FILE_ENDING", "JIC_TYPES", "LABELS", "Case", "CaseMeta", "ClassificationPrediction",
    "ConfigError", "DataError", "Geometry", "JobContext", "Landmarks", "Method", "MethodCard",
    "MethodConfig", "PluginError", "PredictCase", "SegmentationPrediction", "TrainingEvent",
    "TrainingLog", "hookimpl", "jic_classes",
]
