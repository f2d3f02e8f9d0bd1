"""``jic-classifier``: a 2D ResNet classifying the JIC type (A/B/C1/C2) on the mid-coronal slice.

Seed study 004 (Shen et al., J Arthroplasty 2024) trained a CNN on 1,472 mid-coronal T1 MRI slices
and showed that it looks at the necrotic area. Here the slice is reformatted from the 3D image with
:func:`avnbench.evaluation.slices.mid_coronal_slice` (patient lateral to the right, superior up, for left
and right hips alike), z-scored, resized to a square network input and classified by a MONAI
ResNet trained from scratch. A heat map on the slice's own grid comes with every prediction:
Grad-CAM of the predicted class (softmax head) or the network's necrosis map (lesion_extent).

Two heads (``Config.head``). ``softmax`` is the study's kind of CNN: ResNet-18, global pooling,
a 4-way linear layer; the ``paper`` preset uses it on the image alone. With the ~15 training
cases of a CPU fold it does not beat the majority class, so ``quick`` and ``smoke`` use
``lesion_extent``: the trunk maps necrosis (trained on the reference labels of the slice) and
the class probabilities are ordinal steps at the JIC boundaries, read off that map with the
case's landmarks as two extra input channels. README.md has the measurements.

torch and MONAI are imported inside the functions that need them, so listing methods stays fast.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from avnbench.data.dataset import Case, CaseMeta
from avnbench.errors import ConfigError, DataError
from avnbench.evaluation.slices import mid_coronal_slice
from avnbench.methods import (
    ClassificationPrediction,
    Method,
    MethodCard,
    MethodConfig,
    jic_classes,
)

CHECKPOINT_FILE = "jic_classifier.pt"
MODEL_FILE = "jic_classifier.json"
NETWORK_FIELDS = (
    "architecture", "widen_factor", "stem_stride", "stem_max_pool", "input_size",
    "position_channels", "pooling", "head",
)  # fmt: skip
# JIC boundaries in weight-bearing units: the medial thirds and the acetabular edge
JIC_STEPS_WB = (1 / 3, 2 / 3, 1.0)
RESNET_LAYERS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
RESNET_WIDTHS = (64, 128, 256, 512)
EVAL_BATCH = 64


class JicClassifierConfig(MethodConfig):
    """Hyper-parameters of the JIC classifier; the defaults are the ``quick`` preset."""

    architecture: Literal["resnet18", "resnet34"] = Field(
        default="resnet18", description="ResNet depth (MONAI ResNet, basic blocks, 2D)"
    )
    widen_factor: float = Field(
        default=0.25, gt=0, description="channel multiplier of the ResNet (1.0 = 64..512 channels)"
    )
    stem_stride: int = Field(default=2, ge=1, le=2, description="stride of the 7×7 stem conv")
    stem_max_pool: bool = Field(
        default=False,
        description="max-pool after the stem as in ImageNet ResNets; off keeps finer feature "
        "maps (necrosis map, Grad-CAM) on small inputs",
    )
    input_size: int = Field(
        default=96, ge=16, description="the slice is resized to input_size × input_size pixels"
    )
    pooling: Literal["max", "avg"] = Field(
        default="max",
        description="softmax head: global pooling before the linear layer (avg is the ImageNet "
        "ResNet's; max asks 'is there such a feature anywhere')",
    )
    head: Literal["lesion_extent", "softmax"] = Field(
        default="lesion_extent",
        description="softmax: ResNet-18 with a 4-way linear classifier (the study's kind of "
        "CNN). lesion_extent: the ResNet trunk up to layer2 maps necrosis (the lesion-guidance "
        "head, upsampled to the input), and P(type beyond boundary k) is the largest necrosis "
        "probability in the upper half of the slice lateral to k, k = the JIC boundaries at 1/3, "
        "2/3 and 1 of the weight-bearing portion (soft edges of learned width); needs "
        "position_channels",
    )
    lesion_guidance_weight: float = Field(
        default=3.0,
        ge=0,
        description="weight of the necrosis loss: a 1×1 conv head on the layer2 features "
        "predicts the reference necrosis on the slice (binary cross-entropy on the area fraction "
        "per feature cell); the lesion_extent head reads its classes from this map, for the "
        "softmax head it only steers the features to the lesion (0 turns it off)",
    )
    position_channels: bool = Field(
        default=True,
        description="add two input channels from the case's landmarks: the lateral coordinate "
        "scaled to the weight-bearing portion (0 at its medial end, 1 at the acetabular edge) and "
        "the superior coordinate in head radii; they move with the image under augmentation",
    )
    plane_jitter_mm: float = Field(
        default=4.0,
        ge=0,
        description="training also uses coronal planes shifted up to this far anteriorly and "
        "posteriorly, each labelled with the JIC type its own reference labels give (the "
        "reference grading on that plane); 0 trains on the mid-coronal plane only",
    )
    plane_jitter_step_mm: float = Field(
        default=2.0, gt=0, description="spacing of the shifted training planes (mm)"
    )
    epochs: int = Field(default=20, ge=1, description="training epochs")
    batch_size: int = Field(default=8, ge=2, description="slices per optimisation step")
    learning_rate: float = Field(default=2e-3, gt=0, description="AdamW peak learning rate")
    weight_decay: float = Field(default=1e-4, ge=0, description="AdamW weight decay")
    class_weighting: Literal["inverse_frequency", "none"] = Field(
        default="inverse_frequency",
        description="cross-entropy class weights from the training cases' JIC frequencies",
    )
    augment: bool = Field(default=True, description="random affine and intensity augmentation")
    rotation_deg: float = Field(default=10.0, ge=0, description="max in-plane rotation (degrees)")
    translation_frac: float = Field(
        default=0.06, ge=0, description="max shift as a fraction of the slice width"
    )
    scale_range: float = Field(default=0.08, ge=0, description="zoom in 1 ± scale_range")
    intensity_range: float = Field(
        default=0.15, ge=0, description="contrast gain and offset in ± intensity_range (z units)"
    )
    noise_std: float = Field(default=0.05, ge=0, description="Gaussian noise std (z units)")
    amp: bool = Field(default=True, description="mixed precision on CUDA (ignored on CPU)")
    cpu_threads: int = Field(
        default=1,
        ge=1,
        description="torch CPU threads during fit/predict; a network this small runs fastest on "
        "one (several times faster than two when other jobs share the cores)",
    )
    save_heatmap_png: bool = Field(
        default=True, description="write a slice + heat map overlay PNG per predicted case"
    )

    @model_validator(mode="after")
    def _extent_needs_positions(self) -> "JicClassifierConfig":
        if self.head == "lesion_extent" and not self.position_channels:
            raise ValueError("head 'lesion_extent' needs position_channels=true")
        return self

    PRESETS = {
        "smoke": {
            "widen_factor": 0.125,
            "input_size": 32,
            "epochs": 3,
            "batch_size": 4,
        },
        "quick": {},
        # the study's kind of model: an ImageNet ResNet-18 with a softmax head on the image alone
        # (the abstract names no architecture or schedule; these are common ImageNet-style
        # settings for ~1,000 training slices on a GPU)
        "paper": {
            "head": "softmax",
            "pooling": "avg",
            "position_channels": False,
            "lesion_guidance_weight": 0.0,
            "plane_jitter_mm": 0.0,
            "widen_factor": 1.0,
            "stem_max_pool": True,
            "input_size": 224,
            "epochs": 100,
            "batch_size": 32,
            "learning_rate": 1e-3,
            "translation_frac": 0.08,
        },
    }


class JicClassifier(Method):
    """2D CNN on the mid-coronal slice → JIC type, with a heat map per case."""

    card = MethodCard(
        name="jic-classifier",
        task="classification",
        description=(
            "2D ResNet (MONAI, trained from scratch) on the z-scored mid-coronal slice through "
            "the femoral head centre, classifying the JIC type A/B/C1/C2. quick/smoke: ResNet "
            "trunk mapping necrosis, with the JIC boundaries from the landmarks as ordinal "
            "steps; paper: the study's ResNet-18 softmax classifier. Inverse-frequency weighted "
            "cross-entropy, augmentation without left-right flips, model selection on held-out "
            "training patients; per case a heat map: Grad-CAM of the predicted class (softmax "
            "head) or the necrosis map the classes are read from (lesion_extent head)."
        ),
        citation=(
            "Shen X, et al. Development and Validation of an Automated Classification System "
            "for Osteonecrosis of the Femoral Head Using Deep Learning Approach: A Multicenter "
            "Study. J Arthroplasty. 2024;39(2):379-386.e2. doi:10.1016/j.arth.2023.08.018"
        ),
        classes=jic_classes(),
        reference="https://doi.org/10.1016/j.arth.2023.08.018",
    )
    Config = JicClassifierConfig

    def fit(
        self, train_cases: Sequence[Case], val_cases: Sequence[Case], workdir: Path, device: str
    ) -> None:
        """Train on the training cases that have a reference JIC type; keep the epoch that
        does best on ``val_cases`` (accuracy, then loss; among the second half of the
        epochs). Cases without necrosis on the mid-coronal slice (JIC None) have no class and
        are left out of training."""
        with _torch_threads(self.config.cpu_threads, device):
            self._fit(train_cases, val_cases, Path(workdir), device)

    def _fit(
        self, train_cases: Sequence[Case], val_cases: Sequence[Case], workdir: Path, device: str
    ) -> None:
        import torch
        import torch.nn.functional as F

        config: JicClassifierConfig = self.config  # type: ignore[assignment]
        workdir.mkdir(parents=True, exist_ok=True)
        torch_device = torch.device(device)
        torch.manual_seed(config.seed)
        generator = torch.Generator().manual_seed(config.seed)

        train_x, train_masks, train_y = _labelled_inputs(train_cases, config)
        if len(train_y) == 0:
            raise DataError(
                "jic-classifier: none of the training cases has a reference JIC type (no "
                "necrosis on any mid-coronal slice); it needs cases with necrosis to learn from"
            )
        val_x, _, val_y = _labelled_inputs(val_cases, config)
        weights = class_weights(train_y.tolist(), len(jic_classes()), config.class_weighting)
        if self.log:
            self.log.param("train_cases_with_jic", sum(c.meta.jic is not None for c in train_cases))
            self.log.param("train_planes", len(train_y))
            self.log.param("val_cases_with_jic", sum(c.meta.jic is not None for c in val_cases))
            self.log.param("val_planes", len(val_y))
            self.log.param("class_weights", dict(zip(jic_classes(), weights)))

        model = build_network(config).to(torch_device)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
        train_loss_fn = torch.nn.CrossEntropyLoss(
            weight=torch.tensor(weights, dtype=torch.float32, device=torch_device)
        )
        use_amp = config.amp and torch_device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        # masks ride along as a last channel so that augmentation moves them with the image
        xm_all = torch.from_numpy(np.concatenate([train_x, train_masks], axis=1))
        y_all = torch.from_numpy(train_y)

        best: tuple[float, float] | None = None  # (accuracy, -loss): larger is better
        best_epoch = config.epochs - 1
        checkpoint = workdir / CHECKPOINT_FILE
        started = time.perf_counter()
        for epoch in range(config.epochs):
            model.train()
            order = torch.randperm(len(y_all), generator=generator)
            epoch_loss, seen = 0.0, 0
            for batch in _batches(order, config.batch_size):
                xm = xm_all[batch]
                if config.augment:
                    xm = augment(xm, config, generator)
                xm, y = xm.to(torch_device), y_all[batch].to(torch_device)
                x, mask = xm[:, :-1], xm[:, -1:]
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device_type=torch_device.type, enabled=use_amp):
                    logits, lesion_logits = model.forward_train(x)
                    loss = train_loss_fn(logits.float(), y)
                    if config.lesion_guidance_weight > 0:
                        target = F.adaptive_avg_pool2d(mask, lesion_logits.shape[-2:])
                        loss = loss + config.lesion_guidance_weight * (
                            F.binary_cross_entropy_with_logits(lesion_logits.float(), target)
                        )
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                epoch_loss += loss.item() * len(batch)
                seen += len(batch)
            scheduler.step()
            if self.log:
                self.log.metric("train_loss", epoch_loss / seen, step=epoch)

            if len(val_y):
                val_loss, val_accuracy = _evaluate(model, val_x, val_y, torch_device)
                if self.log:
                    self.log.metric("val_loss", val_loss, step=epoch)
                    self.log.metric("val_accuracy", val_accuracy, step=epoch)
                score = (val_accuracy, -val_loss)
                # only the second half (annealed learning rate) is eligible: on a handful of
                # validation cases an early, unstable epoch's lucky score would otherwise win
                eligible = epoch >= config.epochs // 2
                if eligible and (best is None or score > best):
                    best, best_epoch = score, epoch
                    torch.save(model.state_dict(), checkpoint)
        if not len(val_y):
            # nothing to select on: the last epoch is the model
            torch.save(model.state_dict(), checkpoint)

        network = {name: getattr(config, name) for name in NETWORK_FIELDS}
        (workdir / MODEL_FILE).write_text(
            json.dumps(
                {
                    "classes": list(jic_classes()),
                    "network": network,
                    "selected_epoch": best_epoch,
                    "selection": "val accuracy, then val loss" if len(val_y) else "last epoch",
                },
                indent=2,
            )
        )
        if self.log:
            self.log.param("selected_epoch", best_epoch)
            self.log.param("train_seconds", round(time.perf_counter() - started, 2))

    def predict(
        self, cases: Sequence[Case], workdir: Path, device: str
    ) -> Iterator[ClassificationPrediction]:
        """Per case: JIC class probabilities and a heat map on the default mid-coronal grid (same
        shape as ``mid_coronal_slice(...).array``): Grad-CAM of the predicted class on layer4
        for the softmax head; for the lesion_extent head the network's necrosis probability
        map, from which its class probabilities are read (its class-activation equivalent)."""
        import torch
        from monai.visualize import GradCAM

        config: JicClassifierConfig = self.config  # type: ignore[assignment]
        workdir = Path(workdir)
        model_file, checkpoint = workdir / MODEL_FILE, workdir / CHECKPOINT_FILE
        if not model_file.is_file() or not checkpoint.is_file():
            raise ConfigError(
                f"{workdir}: no trained jic-classifier here ({MODEL_FILE}, {CHECKPOINT_FILE}); "
                "run fit first"
            )
        saved = json.loads(model_file.read_text())
        if tuple(saved["classes"]) != jic_classes():
            raise ConfigError(f"{model_file}: classes {saved['classes']} != {jic_classes()}")
        network_config = config.model_copy(update=saved["network"])
        torch_device = torch.device(device)
        model = build_network(network_config)
        model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        model.to(torch_device).eval()
        gradcam = network_config.head == "softmax"
        cam = GradCAM(nn_module=model, target_layers="resnet.layer4") if gradcam else None

        for case in cases:
            plane = _input_slice(case)
            x = network_input(plane, case.meta, network_config)[None].to(torch_device)
            # threads set per case, not across the yield: the caller's code keeps its own
            with _torch_threads(config.cpu_threads, device):
                with torch.no_grad():
                    logits, lesion_logits = model.forward_train(x)
                    probabilities = torch.softmax(logits.float(), dim=1)[0].cpu().numpy()
                if gradcam:
                    with torch.enable_grad():
                        cam_map = cam.compute_map(x, class_idx=int(probabilities.argmax()))
                    heatmap = upsample_cam(cam_map, plane.array.shape)
                else:
                    heatmap = necrosis_map(lesion_logits, plane.array.shape)
            if self.log and config.save_heatmap_png:
                _save_overlay(
                    self.log.artifact(f"heatmaps/{case.case_id}.png"), plane, heatmap,
                    probabilities, case.case_id,
                )  # fmt: skip
            yield ClassificationPrediction(
                case_id=case.case_id,
                probabilities=probabilities.astype(np.float64),
                heatmap=heatmap,
            )


def build_network(config: JicClassifierConfig):  # noqa: C901 - one nested module
    """A 2D MONAI ResNet with ``n_input_channels`` inputs, randomly initialised (MONAI's ResNet
    only fetches weights when asked to; nothing is downloaded), with a 1×1 necrosis head on
    layer2 and the configured class head. ``network(x)`` gives class logits (log-probabilities
    for ``lesion_extent``); ``forward_train(x)`` also the necrosis logits on the layer2 grid."""
    import math

    import torch
    import torch.nn.functional as F
    from monai.networks.nets import ResNet

    class JicNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.resnet = ResNet(
                block="basic",
                layers=list(RESNET_LAYERS[config.architecture]),
                block_inplanes=list(RESNET_WIDTHS),
                spatial_dims=2,
                n_input_channels=n_input_channels(config),
                conv1_t_size=7,
                conv1_t_stride=config.stem_stride,
                no_max_pool=not config.stem_max_pool,
                widen_factor=config.widen_factor,
                num_classes=len(jic_classes()),
            )
            if config.head == "lesion_extent":
                self.register_buffer("steps", torch.tensor(JIC_STEPS_WB).view(1, 3, 1, 1))
                self.log_softness = torch.nn.Parameter(torch.tensor(math.log(0.05)))
            if config.head == "lesion_extent":
                # the classes are read off the layer2 necrosis map: no deeper layers needed
                self.resnet.layer3 = self.resnet.layer4 = torch.nn.Identity()
                self.resnet.fc = torch.nn.Identity()
            elif config.pooling == "max":
                self.resnet.avgpool = torch.nn.AdaptiveMaxPool2d(1)
            layer2_channels = int(RESNET_WIDTHS[1] * config.widen_factor)
            self.lesion_head = torch.nn.Conv2d(layer2_channels, 1, kernel_size=1)

        def forward(self, x):
            """Class logits (log-probabilities for the lesion_extent head)."""
            return self.forward_train(x)[0]

        def forward_train(self, x):
            """(class logits, necrosis logits on the layer2 grid)."""
            r = self.resnet
            h = r.act(r.bn1(r.conv1(x)))
            if not r.no_max_pool:
                h = r.maxpool(h)
            mid = r.layer2(r.layer1(h))
            lesion_logits = self.lesion_head(mid)
            if config.head == "softmax":
                return r.fc(torch.flatten(r.avgpool(r.layer4(r.layer3(mid))), 1)), lesion_logits
            return self.extent_logits(x, lesion_logits), lesion_logits

        def extent_logits(self, x, lesion_logits):
            lesion = torch.sigmoid(
                F.interpolate(lesion_logits.float(), size=x.shape[-2:], mode="bilinear",
                              align_corners=False)
            )  # fmt: skip
            lateral, superior = x[:, 1:2].float(), x[:, 2:3].float()
            # beyond[:, k]: how surely a pixel lies lateral to boundary k, upper half only (the
            # JIC reading ignores necrosis below the head centre)
            beyond = torch.sigmoid((lateral - self.steps) / self.log_softness.exp())
            beyond = beyond * (superior >= 0)
            above = (lesion * beyond).flatten(2).amax(dim=2)  # (N, 3): P(type > k), decreasing
            ones, zeros = torch.ones_like(above[:, :1]), torch.zeros_like(above[:, :1])
            cumulative = torch.cat([ones, above, zeros], dim=1)
            probabilities = (cumulative[:, :-1] - cumulative[:, 1:]).clamp_min(1e-6)
            return torch.log(probabilities / probabilities.sum(dim=1, keepdim=True))

    return JicNet()


def n_input_channels(config: JicClassifierConfig) -> int:
    """The grey slice, plus two landmark coordinate channels when ``position_channels``."""
    return 3 if config.position_channels else 1


def class_weights(labels: Sequence[int], n_classes: int, mode: str) -> list[float]:
    """Cross-entropy weights: n / (k · n_c) for the k classes present (mean 1 over the
    training cases), 0 for absent classes (they never appear as targets)."""
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=n_classes).astype(float)
    if mode == "none":
        return [1.0 if c > 0 else 0.0 for c in counts]
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return [float(w) for w in weights]


def zscore(slice_array: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the slice (float32)."""
    a = np.asarray(slice_array, dtype=np.float32)
    return (a - a.mean()) / max(float(a.std()), 1e-6)


def network_input(plane, meta: CaseMeta, config: JicClassifierConfig):
    """(C, input_size, input_size) float32 tensor: the z-scored slice resized to the network's
    input, and with ``position_channels`` the weight-bearing lateral coordinate and the superior
    coordinate in head radii on the same pixels."""
    import torch

    channels = [zscore(plane.array)]
    if config.position_channels:
        from avnbench.evaluation.grading import jic_boundaries_mm

        boundaries = jic_boundaries_mm(meta)
        if boundaries is None or meta.landmarks is None:
            raise DataError(f"case {meta.case_id}: no landmarks for the position channels")
        x_med, _, _, x_edge = boundaries
        h_mm, v_mm = plane.grid_mm()
        channels.append((h_mm - x_med) / max(x_edge - x_med, 1e-3))
        channels.append(v_mm / meta.landmarks.head_radius_mm)
    return torch.from_numpy(_resize(np.stack(channels), config.input_size, "bilinear"))


def necrosis_map(lesion_logits, shape: tuple[int, ...]) -> np.ndarray:
    """The network's necrosis probability (0–1, float32), its (1, 1, h, w) logits resized
    bilinearly to the slice ``shape`` (same field of view) before the sigmoid."""
    import torch
    import torch.nn.functional as F

    logits = F.interpolate(lesion_logits.detach().float(), size=tuple(shape), mode="bilinear",
                           align_corners=False)[0, 0]  # fmt: skip
    return torch.sigmoid(logits).cpu().numpy().astype(np.float32)


def _resize(array: np.ndarray, size: int, mode: str) -> np.ndarray:
    """(C, v, h) or (v, h) float array resized to size × size pixels (same field of view)."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    t = t[None] if t.ndim == 3 else t[None, None]
    kwargs = {"align_corners": False, "antialias": True} if mode == "bilinear" else {}
    out = F.interpolate(t, size=(size, size), mode=mode, **kwargs)[0]
    return out.numpy() if array.ndim == 3 else out[0].numpy()


def upsample_cam(cam_map, shape: tuple[int, ...]) -> np.ndarray:
    """A (1, 1, h, w) class-activation map, resized bilinearly to the slice ``shape`` (both span
    the same field of view) and scaled to max 1; non-negative float32."""
    import torch
    import torch.nn.functional as F

    heat = F.interpolate(cam_map.detach().float(), size=tuple(shape), mode="bilinear",
                         align_corners=False)[0, 0]  # fmt: skip
    heat = torch.clamp(heat, min=0).cpu().numpy().astype(np.float32)
    peak = float(heat.max())
    return heat / peak if peak > 0 else heat


def augment(x, config: JicClassifierConfig, generator):
    """Random rotation, zoom, shift, contrast and noise of a (N, 1, S, S) batch. Never a
    left-right flip: the JIC type depends on how far laterally the lesion reaches."""
    import math

    import torch
    import torch.nn.functional as F

    n = x.shape[0]

    def uniform(half_range: float):
        return (torch.rand(n, generator=generator) * 2 - 1) * half_range

    angle = uniform(math.radians(config.rotation_deg))
    scale = 1 + uniform(config.scale_range)
    shift_x, shift_y = uniform(2 * config.translation_frac), uniform(2 * config.translation_frac)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # position channels are resampled with the image, so they keep naming each pixel's
    # original place relative to the landmarks
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    gain = 1 + uniform(config.intensity_range)
    offset = uniform(config.intensity_range)
    image = out[:, :1] * gain.view(n, 1, 1, 1) + offset.view(n, 1, 1, 1)
    if config.noise_std > 0:
        image = image + torch.randn(image.shape, generator=generator) * config.noise_std
    return torch.cat([image, out[:, 1:]], dim=1)


@contextmanager
def _torch_threads(n_threads: int, device: str):
    """Run with ``n_threads`` torch CPU threads on the CPU, restoring the caller's setting."""
    import torch

    if device != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _input_slice(case: Case):
    return mid_coronal_slice(case.image_array(), case.meta, order=1)


def _labelled_inputs(
    cases: Sequence[Case], config: JicClassifierConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Network inputs, necrosis masks (area fractions on the input grid) and class indices of
    every training plane that has a JIC type: the
    mid-coronal plane and its anterior/posterior shifts (``plane_jitter_mm``), each labelled by
    the reference grading applied to that plane. Cases whose mid-coronal plane has no JIC type
    are left out, and so are shifted planes without necrosis."""
    from avnbench.evaluation.grading import jic_type

    classes = jic_classes()
    offsets = _plane_offsets_mm(config)
    inputs, masks, targets = [], [], []
    for case in cases:
        if case.meta.jic is None:
            continue  # no necrosis on its mid-coronal slice: no class, and the core skips it too
        if case.meta.landmarks is None:
            raise DataError(f"case {case.case_id}: no landmarks; the mid-coronal slice needs them")
        image, labels = case.image_array(), case.label_array()
        for offset in offsets:
            meta = _shifted_meta(case.meta, offset)
            jic = case.meta.jic if offset == 0.0 else jic_type(labels, meta).type
            if jic is None:
                continue
            plane = mid_coronal_slice(image, meta, order=1)
            necrosis = mid_coronal_slice(labels, meta, order=0).array == 2
            inputs.append(network_input(plane, meta, config).numpy())
            masks.append(_resize(necrosis.astype(np.float32), config.input_size, "area"))
            targets.append(classes.index(jic))
    size = config.input_size
    if not inputs:
        empty = np.zeros((0, n_input_channels(config), size, size), np.float32)
        return empty, np.zeros((0, 1, size, size), np.float32), np.zeros(0, np.int64)
    return np.stack(inputs), np.stack(masks)[:, None], np.array(targets, dtype=np.int64)


def _plane_offsets_mm(config: JicClassifierConfig) -> list[float]:
    """0 first, then ±step, ±2·step, ... up to ``plane_jitter_mm``."""
    n = int(np.floor(config.plane_jitter_mm / config.plane_jitter_step_mm + 1e-9))
    steps = [k * config.plane_jitter_step_mm for k in range(1, n + 1)]
    return [0.0] + [sign * d for d in steps for sign in (1.0, -1.0)]


def _shifted_meta(meta: CaseMeta, offset_mm: float) -> CaseMeta:
    """The case's metadata with the head centre moved ``offset_mm`` along the anterior axis: a
    parallel coronal plane. Lateral coordinates (and so the JIC boundaries) are unchanged."""
    if offset_mm == 0.0:
        return meta
    landmarks = meta.landmarks
    center = np.asarray(landmarks.head_center_mm) + offset_mm * np.asarray(
        landmarks.patient_axes.anterior
    )
    moved = landmarks.model_copy(update={"head_center_mm": tuple(float(c) for c in center)})
    return meta.model_copy(update={"landmarks": moved})


def _batches(order, batch_size: int):
    """Index batches; a last batch of one joins the previous one (BatchNorm needs two)."""
    chunks = list(order.split(batch_size))
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks[-2:] = [order[-(len(chunks[-2]) + 1) :]]
    return chunks


def _evaluate(model, x: np.ndarray, y: np.ndarray, device) -> tuple[float, float]:
    """Unweighted cross-entropy and accuracy on held-out slices."""
    import torch

    model.eval()
    with torch.no_grad():  # in chunks: a real validation set at 224² would not fit at once
        logits = torch.cat([
            model(torch.from_numpy(chunk).to(device)).float().cpu()
            for chunk in np.array_split(x, max(1, int(np.ceil(len(x) / EVAL_BATCH))))
        ])  # fmt: skip
    target = torch.from_numpy(y)
    loss = float(torch.nn.functional.cross_entropy(logits, target))
    accuracy = float((logits.argmax(1) == target).float().mean())
    return loss, accuracy


def _save_overlay(path: Path, plane, heatmap: np.ndarray, probabilities, case_id: str) -> None:
    from matplotlib.figure import Figure

    extent = (plane.h_mm[0], plane.h_mm[-1], plane.v_mm[0], plane.v_mm[-1])
    fig = Figure(figsize=(4, 4.3), dpi=80)
    ax = fig.add_subplot()
    ax.imshow(plane.array, cmap="gray", origin="lower", extent=extent)
    ax.imshow(heatmap, cmap="jet", alpha=0.35, origin="lower", extent=extent, vmin=0, vmax=1)
    k = int(np.argmax(probabilities))
    ax.set_title(f"{case_id}: JIC {jic_classes()[k]} (p={probabilities[k]:.2f})", fontsize=9)
    ax.set_xlabel("lateral (mm)")
    ax.set_ylabel("superior (mm)")
    fig.tight_layout()
    fig.savefig(path)
