"""Methods for tests/test_executors.py, in a module of their own so that Ray workers can import
them (the test puts this folder on the workers' PYTHONPATH)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from avnbench.methods import Method, MethodCard, MethodConfig, SegmentationPrediction

TIMES_FILE = "times.json"


class SleepConfig(MethodConfig):
    sleep_seconds: float = 0.0


class TimedMember(Method):
    """Sleeps in fit and writes when its fit started and ended (time.time(), s) to the job folder."""

    card = MethodCard(name="timed-member", task="segmentation", description="test", citation="none")
    Config = SleepConfig

    def fit(self, train_cases, val_cases, workdir, device):
        start = time.time()
        time.sleep(self.config.sleep_seconds)
        Path(workdir, TIMES_FILE).write_text(json.dumps({"start": start, "end": time.time()}))
        self.log.epoch(1, 2, loss=0.5)  # training reports travel from the worker to the driver
        self.log.epoch(2, 2, loss=0.25)

    def predict(self, cases, workdir, device):
        for case in cases:
            yield SegmentationPrediction(case_id=case.case_id, labels=np.zeros(case.geometry.shape_zyx, np.uint8))


class TimedEnsemble(TimedMember):
    card = MethodCard(name="timed-ensemble", task="segmentation", description="test", citation="none",
                      builds_on=("timed-member",))


class FailsOnFold1(TimedMember):
    """Raises in fit on fold 1 (a method's own error), works on the others."""

    card = MethodCard(name="fails-on-fold-1", task="segmentation", description="test", citation="none")

    def fit(self, train_cases, val_cases, workdir, device):
        if self.context.fold == 1:
            raise RuntimeError("boom on purpose")
        super().fit(train_cases, val_cases, workdir, device)


class DiesOnce(TimedMember):
    """Its worker process dies the first time it fits a fold (a system failure, not the method's
    exception); the retry finds the marker and fits."""

    card = MethodCard(name="dies-once", task="segmentation", description="test", citation="none")

    def fit(self, train_cases, val_cases, workdir, device):
        import os

        marker = Path(workdir, "died_once")
        if not marker.exists():
            marker.write_text("")
            os._exit(1)
        super().fit(train_cases, val_cases, workdir, device)


class TwoCores(TimedMember):
    """Asks the executor for two cores (as nnU-Net's preprocessing may)."""

    card = MethodCard(name="two-cores", task="segmentation", description="test", citation="none")

    @classmethod
    def resources(cls, preset, device, config=None):
        from avnbench.methods import JobResources

        return JobResources(num_cpus=2, num_gpus=0, memory_mb=256)


class OneCore(TimedMember):
    card = MethodCard(name="one-core", task="segmentation", description="test", citation="none")
