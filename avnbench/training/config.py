"""The config fields every torch method shares."""

from __future__ import annotations

from pydantic import Field

from avnbench.methods import MethodConfig


class TorchMethodConfig(MethodConfig):
    """Base of a torch method's ``Config``: ``seed`` (from :class:`MethodConfig`), mixed
    precision, CPU threads and data-loading workers. Subclasses add their hyper-parameters and
    ``PRESETS`` as usual and may override these fields' values in a preset."""

    amp: bool = Field(default=True, description="mixed precision (float16) on CUDA; ignored on CPU")
    cpu_bfloat16: bool = Field(
        default=False,
        description="bfloat16 autocast on a CPU that computes it natively (AVX512-BF16 or AMX; "
        "ignored elsewhere): faster 3D convolutions, weights stay float32",
    )
    cpu_threads: int | None = Field(
        default=1,
        gt=0,
        description="torch CPU threads during fit and predict (None: leave torch's setting); 1 is "
        "safest on a machine shared with other jobs, where OpenMP threads wait on each other",
    )
    num_workers: int = Field(
        default=0, ge=0, description="worker processes loading training data (0: in the training process)"
    )
