"""Device and mixed-precision selection: one place that decides when float16 autocast is on."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Precision:
    """Where a method computes and whether it uses mixed precision (float16 autocast with a
    gradient scaler). AMP is used on CUDA only; on a CPU both helpers are no-ops."""

    device: Any  # torch.device
    amp: bool

    def autocast(self):
        """A context in which forward passes run in float16 when AMP is on (else a no-op)."""
        if not self.amp:
            return nullcontext()
        import torch

        return torch.autocast(device_type=self.device.type, dtype=torch.float16)

    def grad_scaler(self):
        """A ``torch.amp.GradScaler``, enabled only with AMP (disabled it passes losses through)."""
        import torch

        return torch.amp.GradScaler("cuda", enabled=self.amp)


def precision(device: str, amp: bool = True) -> Precision:
    """The :class:`Precision` for ``device`` (``"cuda"`` or ``"cpu"``): AMP if asked for and
    the device is a GPU."""
    import torch

    torch_device = torch.device(device)
    return Precision(device=torch_device, amp=bool(amp) and torch_device.type == "cuda")


def optimizer_step(loss, optimizer, scaler, clip_grad_norm: float | None = None, parameters=None) -> None:
    """Back-propagate ``loss`` and step ``optimizer`` through ``scaler`` (AMP-safe), clipping the
    gradient norm of ``parameters`` to ``clip_grad_norm`` first if given. Gradients must have
    been zeroed before the forward pass."""
    import torch

    scaler.scale(loss).backward()
    if clip_grad_norm is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(parameters, clip_grad_norm)
    scaler.step(optimizer)
    scaler.update()
