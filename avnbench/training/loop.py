"""A small epoch loop: train, validate, keep the best checkpoint, report every epoch.

The method supplies what differs between methods as callbacks — one epoch of training, one
validation and how to rank its scores — and the loop does what they share: the epoch count,
validation every few epochs, keep-best checkpointing (a plain ``state_dict`` written with
``torch.save`` and read back with ``torch.load(..., weights_only=True)``) and one report per
epoch through :meth:`avnbench.methods.TrainingLog.epoch`, which the runner shows as
``epoch i/N``, loss and ETA and logs as live MLflow curves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avnbench.methods import TrainingLog

Values = Mapping[str, float]


@dataclass
class TrainingResult:
    """What the loop did: the epoch whose weights are in the checkpoint (0-based), its score
    (None when nothing was validated), and every epoch's reported values."""

    best_epoch: int
    best_score: Any | None
    selection: str
    history: list[dict[str, float]] = field(default_factory=list)


def save_state(model, path: Path) -> None:
    """Write ``model``'s state dict (tensors only, loadable with ``weights_only=True``)."""
    import torch

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)


def load_state(model, path: Path, device: str | Any = "cpu"):
    """Load a state dict written by :func:`save_state` into ``model`` (``weights_only=True``:
    no pickled code runs) and return the model."""
    import torch

    model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    return model


def train_epochs(
    model,
    *,
    epochs: int,
    train_epoch: Callable[[int], Values],
    checkpoint: Path,
    validate: Callable[[int], Values] | None = None,
    score: Callable[[Values], Any] | None = None,
    validate_every: int = 1,
    select_from: int = 0,
    log: TrainingLog | None = None,
    restore_best: bool = True,
) -> TrainingResult:
    """Run ``epochs`` epochs of ``train_epoch(epoch)`` (0-based; it returns the epoch's values,
    e.g. ``{"train_loss": 0.4}``) and keep the best weights in ``checkpoint``.

    With ``validate``: after every ``validate_every``-th epoch and the last one,
    ``validate(epoch)`` returns validation values; ``score(values)`` ranks them (larger is
    better; default: the values themselves must hold one entry, used as is). Epochs before
    ``select_from`` are validated and reported but never selected. The checkpoint is written
    whenever an eligible epoch beats the best so far. Without ``validate`` the last epoch is the
    model. Every epoch is reported as ``log.epoch(epoch + 1, epochs, **values)``, its values
    with ``epoch_seconds`` (wall time of its training and validation, s) added. On a CUDA model
    the peak GPU memory of the loop is recorded as ``log.metric("peak_gpu_memory_mib", ...)``
    (``torch.cuda.max_memory_allocated``, MiB). With ``restore_best`` the model ends holding the
    checkpoint's weights.
    """
    import time

    if score is None:
        score = _single_value
    cuda = _cuda_device(model)
    if cuda is not None:
        import torch

        torch.cuda.reset_peak_memory_stats(cuda)
    best_score, best_epoch = None, epochs - 1
    history: list[dict[str, float]] = []
    for epoch in range(epochs):
        started = time.perf_counter()
        values = dict(train_epoch(epoch))
        last = epoch == epochs - 1
        if validate is not None and ((epoch + 1) % validate_every == 0 or last):
            validation = dict(validate(epoch))
            values.update(validation)
            rank = score(validation)
            if epoch >= select_from and (best_score is None or rank > best_score):
                best_score, best_epoch = rank, epoch
                save_state(model, checkpoint)
        values["epoch_seconds"] = time.perf_counter() - started
        history.append(values)
        if log is not None:
            log.epoch(epoch + 1, epochs, **values)
    if cuda is not None and log is not None:
        import torch

        log.metric("peak_gpu_memory_mib", torch.cuda.max_memory_allocated(cuda) / 2**20, step=epochs)
    if validate is None or best_score is None:
        best_epoch = epochs - 1
        save_state(model, checkpoint)
    elif restore_best:
        load_state(model, checkpoint)
    return TrainingResult(
        best_epoch=best_epoch,
        best_score=best_score,
        selection="validation" if best_score is not None else "last_epoch",
        history=history,
    )


def _cuda_device(model):
    """The CUDA device ``model``'s parameters are on, else None."""
    try:
        parameter = next(iter(model.parameters()))
    except (AttributeError, StopIteration, TypeError):
        return None
    return parameter.device if parameter.device.type == "cuda" else None


def endless(loader):
    """Batches without end: epochs of a fixed number of steps, not passes over the data."""
    while True:
        yield from loader


def _single_value(values: Values) -> float:
    if len(values) != 1:
        raise ValueError(f"validation returned {sorted(values)}; pass score= to rank them")
    return next(iter(values.values()))
