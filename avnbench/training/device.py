"""Device and mixed-precision selection: one place that decides when float16 or bfloat16 autocast
is on."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Precision:
    """Where a method computes and whether it uses mixed precision: ``amp`` is float16 autocast
    with a gradient scaler (CUDA only); ``bfloat16`` is bfloat16 autocast on a CPU that computes
    it natively (no scaler: bfloat16 has float32's exponent range). Weights stay float32."""

    device: Any  # torch.device
    amp: bool
    bfloat16: bool = False

    def autocast(self):
        """A context in which forward passes run in float16 (AMP) or bfloat16, else a no-op."""
        if not (self.amp or self.bfloat16):
            return nullcontext()
        import torch

        dtype = torch.float16 if self.amp else torch.bfloat16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def grad_scaler(self):
        """A ``torch.amp.GradScaler``, enabled only with AMP (disabled it passes losses through)."""
        import torch

        return torch.amp.GradScaler("cuda", enabled=self.amp)


def precision(device: str, amp: bool = True, cpu_bfloat16: bool = False) -> Precision:
    """The :class:`Precision` for ``device`` (``"cuda"`` or ``"cpu"``): AMP if asked for and
    the device is a GPU; bfloat16 autocast if asked for, the device is a CPU and
    :func:`native_bfloat16` holds (elsewhere bfloat16 is emulated, slower than float32)."""
    import torch

    torch_device = torch.device(device)
    is_cpu = torch_device.type == "cpu"
    return Precision(device=torch_device, amp=bool(amp) and torch_device.type == "cuda",
                     bfloat16=bool(cpu_bfloat16) and is_cpu and native_bfloat16())


def native_bfloat16() -> bool:
    """Whether this machine's CPU computes bfloat16 natively (AVX512-BF16 or AMX), so that
    oneDNN's bfloat16 convolutions beat float32 ones: a ``dynunet`` quick step (two 32×64×64
    patches, channels-last) took 0.28 s instead of 0.46 s on one core of the build machine
    (``benchmarks/bench_patch_shapes.py --channels-last --bfloat16``)."""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def channels_last(value, enabled: bool = True):
    """``value`` (a module, or a 4-D / 5-D tensor) in channels-last memory order when
    ``enabled``, else unchanged. oneDNN runs 3D convolutions in NDHWC without reordering every
    input and output: a ``dynunet`` quick step took 0.46 s instead of 0.53 s on one CPU thread
    (``benchmarks/bench_patch_shapes.py --channels-last``). The network and its numbers are the
    same up to the order of float sums."""
    if not enabled:
        return value
    import torch

    if isinstance(value, torch.nn.Module):
        ndim = _module_ndim(value)
        return value if ndim is None else value.to(memory_format=_format(ndim))
    return value.contiguous(memory_format=_format(value.dim())) if value.dim() in (4, 5) else value


def _format(ndim: int):
    import torch

    return torch.channels_last_3d if ndim == 5 else torch.channels_last


def _module_ndim(module) -> int | None:
    """5 for a module with 3D convolutions, 4 for 2D ones, None for neither."""
    import torch

    for m in module.modules():
        if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)):
            return 5
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            return 4
    return None


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
