"""The triplanar 2.5D patch CNN (seed 003) and its exact dense (fully convolutional) evaluation.

Per voxel the network sees three 32×32 patches centred on it, in voxel units on the native grid:

- axial    patch: the (y, x) plane through the voxel, rows = y, columns = x;
- coronal  patch: the (z, x) plane through the voxel, rows = z, columns = x;
- sagittal patch: the (z, y) plane through the voxel, rows = z, columns = y.

A patch spans ``centre - 16 .. centre + 15`` along both of its axes. The volume is z-scored and
zero-padded by 16 voxels before and 15 after on every axis, so every voxel has full patches.

Architecture (7 layers: conv, pool, conv, pool, conv, fully connected, fully connected), with
LATE fusion: each plane has its own 2-D tower

    conv 3×3 (valid) → ReLU → max-pool 2 → conv 3×3 → ReLU → max-pool 2 → conv 3×3 → ReLU → dropout

mapping 32×32 → 30 → 15 → 13 → 6 (floor) → 4, and the three towers' 4×4 feature maps are
concatenated into the first fully connected layer (→ ReLU → dropout) and the second fully
connected layer gives the 3 class logits (background, vital, necrosis).

Why late fusion: with the three planes fused at the first convolution (early fusion) a voxel's
first-layer feature map mixes values from three planes that neighbouring voxels do not share,
so no dense equivalent cheaper than patch-by-patch evaluation exists. With late fusion every
tower is translation-equivariant within its own plane, so it can be evaluated on whole slices,
and the first fully connected layer is linear, so it splits into one 4×4 convolution per tower
whose per-voxel outputs are summed. Pooling is handled exactly by the "à trous" trick: a
stride-2 pooling becomes a stride-1 pooling and every later layer is dilated by the product of
the strides before it (1, 2, 4), so that every voxel gets exactly the per-patch network's output.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PATCH_SIZE = 32
PATCH_HALF = 16  # a patch spans centre - 16 .. centre + 15
PAD_BEFORE, PAD_AFTER = PATCH_HALF, PATCH_SIZE - PATCH_HALF - 1
TOWER_OUT = 4  # spatial size of a tower's output for a 32×32 patch
PLANES = ("axial", "coronal", "sagittal")
N_CLASSES = 3


def normalise_image(image: np.ndarray) -> np.ndarray:
    """Z-score a volume over all its voxels (float32); a constant image becomes all zeros."""
    image = np.asarray(image, dtype=np.float32)
    std = float(image.std())
    return ((image - float(image.mean())) / (std if std > 0 else 1.0)).astype(np.float32)


def pad_volume(normalised: np.ndarray) -> torch.Tensor:
    """Zero-pad a normalised (z, y, x) volume so that every voxel has full patches."""
    t = torch.from_numpy(np.ascontiguousarray(normalised, dtype=np.float32))
    pad = (PAD_BEFORE, PAD_AFTER) * 3
    return F.pad(t, pad, mode="constant", value=0.0)


class PlaneTower(nn.Module):
    """The convolutional part for one plane: 32×32 patch → (c3, 4, 4) features."""

    def __init__(self, channels: Sequence[int], dropout: float):
        super().__init__()
        c1, c2, c3 = channels
        self.conv1 = nn.Conv2d(1, c1, 3)
        self.conv2 = nn.Conv2d(c1, c2, 3)
        self.conv3 = nn.Conv2d(c2, c3, 3)
        self.dropout = nn.Dropout(dropout)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(patches)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.dropout(F.relu(self.conv3(x)))

    def dense(self, images: torch.Tensor, fc1_part: torch.Tensor) -> torch.Tensor:
        """Every position's first-FC contribution at once (eval mode; dropout is identity).

        ``images`` (S, 1, H + 31, W + 31) are padded planes; the result (S, hidden, H + 2, W + 2)
        holds at [s, :, i, j] the contribution of the patch whose top-left corner is (i, j),
        i.e. of the voxel at (i, j) of the unpadded plane. ``fc1_part`` is this tower's slice of
        the first fully connected layer's weight, shaped (hidden, c3, 4, 4).
        """
        x = _dense_max_pool(F.relu(self.conv1(images)), dilation=1)
        x = F.relu(F.conv2d(x, self.conv2.weight, self.conv2.bias, dilation=2))
        x = _dense_max_pool(x, dilation=2)
        x = F.relu(F.conv2d(x, self.conv3.weight, self.conv3.bias, dilation=4))
        return F.conv2d(x, fc1_part, dilation=4)


def _dense_max_pool(x: torch.Tensor, dilation: int) -> torch.Tensor:
    """2×2 max-pooling at stride 1 with the given dilation, i.e. every stride-2 pooling window
    of every shift at once; as two element-wise maxima, much faster on a CPU than max_pool2d."""
    d = dilation
    rows = torch.maximum(x[:, :, :-d, :], x[:, :, d:, :])
    return torch.maximum(rows[:, :, :, :-d], rows[:, :, :, d:])


class TriplanarPatchCNN(nn.Module):
    """Seed 003's 7-layer patch CNN, three classes, late fusion of the three planes."""

    def __init__(
        self,
        channels: Sequence[int] = (16, 32, 32),
        hidden_units: int = 64,
        conv_dropout: float = 0.5,
        fc_dropout: float = 0.5,
        bias_init: float = 0.1,
    ):
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        self.hidden_units = int(hidden_units)
        self.towers = nn.ModuleList(PlaneTower(self.channels, conv_dropout) for _ in PLANES)
        self.fc1 = nn.Linear(len(PLANES) * self.channels[2] * TOWER_OUT**2, self.hidden_units)
        self.fc2 = nn.Linear(self.hidden_units, N_CLASSES)
        self.fc_dropout = nn.Dropout(fc_dropout)
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(module.weight)  # Glorot & Bengio, as in the study
                nn.init.constant_(module.bias, bias_init)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """Logits (N, 3) for patches (N, 3, 32, 32): channels axial, coronal, sagittal."""
        features = [
            tower(patches[:, i : i + 1]).flatten(1) for i, tower in enumerate(self.towers)
        ]
        hidden = self.fc_dropout(F.relu(self.fc1(torch.cat(features, dim=1))))
        return self.fc2(hidden)

    def fc1_parts(self) -> list[torch.Tensor]:
        """The first FC layer's weight split per tower, each shaped (hidden, c3, 4, 4)."""
        per_tower = self.channels[2] * TOWER_OUT**2
        return [
            self.fc1.weight[:, i * per_tower : (i + 1) * per_tower].reshape(
                self.hidden_units, self.channels[2], TOWER_OUT, TOWER_OUT
            )
            for i in range(len(PLANES))
        ]


def extract_patches(padded: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Triplanar patches (N, 3, 32, 32) of voxels ``coords`` (N, 3) (z, y, x) of a padded volume."""
    offsets = torch.arange(PATCH_SIZE, device=padded.device)
    z, y, x = (coords[:, i].to(padded.device) for i in range(3))
    rows = offsets[None, :, None]
    cols = offsets[None, None, :]
    # Padded index of voxel v is v + 16, so its patch starts at padded index v.
    axial = padded[(z + PAD_BEFORE)[:, None, None], y[:, None, None] + rows, x[:, None, None] + cols]
    coronal = padded[z[:, None, None] + rows, (y + PAD_BEFORE)[:, None, None], x[:, None, None] + cols]
    sagittal = padded[z[:, None, None] + rows, y[:, None, None] + cols, (x + PAD_BEFORE)[:, None, None]]
    return torch.stack([axial, coronal, sagittal], dim=1)


@torch.no_grad()
def predict_patchwise(
    model: TriplanarPatchCNN, padded: torch.Tensor, coords: torch.Tensor, batch_size: int = 1024
) -> torch.Tensor:
    """Class probabilities (N, 3) of voxels ``coords`` by cutting out their patches one by one."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(coords), batch_size):
        patches = extract_patches(padded, coords[start : start + batch_size]).to(device)
        out.append(torch.softmax(model(patches).float(), dim=1))
    return torch.cat(out) if out else torch.zeros((0, N_CLASSES))


@torch.no_grad()
def predict_dense(
    model: TriplanarPatchCNN,
    padded: torch.Tensor,
    region: tuple[slice, slice, slice] | None = None,
    plane_batch: int = 16,
    z_chunk: int = 16,
    amp: bool = False,
) -> torch.Tensor:
    """Class probabilities (3, z, y, x) of every voxel of ``region`` (default: the whole volume).

    ``padded`` is a volume from :func:`pad_volume` (on any device; the model's device is used).
    The region is processed in chunks of ``z_chunk`` slices and ``plane_batch`` planes at a time
    to bound memory; the result equals :func:`predict_patchwise` on the same voxels to float
    tolerance.
    """
    model.eval()
    device = next(model.parameters()).device
    shape = tuple(s - PAD_BEFORE - PAD_AFTER for s in padded.shape)
    region = region or tuple(slice(0, s) for s in shape)
    (z0, z1), (y0, y1), (x0, x1) = ((r.start or 0, shape[i] if r.stop is None else r.stop) for i, r in enumerate(region))
    margin = PAD_BEFORE + PAD_AFTER
    fc1_axial, fc1_coronal, fc1_sagittal = model.fc1_parts()
    axial, coronal, sagittal = model.towers
    probabilities = torch.empty((N_CLASSES, z1 - z0, y1 - y0, x1 - x0), dtype=torch.float32)
    autocast = torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp and device.type == "cuda")

    def run_planes(tower: PlaneTower, fc1_part: torch.Tensor, planes: torch.Tensor) -> torch.Tensor:
        # planes: (S, H + 31, W + 31) -> (S, hidden, H, W)
        outs = []
        for start in range(0, planes.shape[0], plane_batch):
            batch = planes[start : start + plane_batch].to(device)[:, None]
            with autocast:
                out = tower.dense(batch, fc1_part)
            outs.append(out[:, :, : batch.shape[2] - margin, : batch.shape[3] - margin].float())
        return torch.cat(outs)

    for cz0 in range(z0, z1, z_chunk):
        cz1 = min(cz0 + z_chunk, z1)
        # Padded index of voxel v is v + 16: planes through voxels, windows starting at v.
        axial_planes = padded[cz0 + PAD_BEFORE : cz1 + PAD_BEFORE, y0 : y1 + margin, x0 : x1 + margin]
        coronal_planes = padded[cz0 : cz1 + margin, y0 + PAD_BEFORE : y1 + PAD_BEFORE, x0 : x1 + margin]
        sagittal_planes = padded[cz0 : cz1 + margin, y0 : y1 + margin, x0 + PAD_BEFORE : x1 + PAD_BEFORE]
        hidden = run_planes(axial, fc1_axial, axial_planes).permute(1, 0, 2, 3)  # (h, z, y, x)
        hidden += run_planes(coronal, fc1_coronal, coronal_planes.permute(1, 0, 2)).permute(1, 2, 0, 3)
        hidden += run_planes(sagittal, fc1_sagittal, sagittal_planes.permute(2, 0, 1)).permute(1, 2, 3, 0)
        hidden = F.relu(hidden + model.fc1.bias.float()[:, None, None, None])
        logits = torch.einsum("kh,hzyx->kzyx", model.fc2.weight.float(), hidden)
        logits += model.fc2.bias.float()[:, None, None, None]
        probabilities[:, cz0 - z0 : cz1 - z0] = torch.softmax(logits, dim=0).cpu()
    return probabilities
