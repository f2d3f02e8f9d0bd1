"""Hyper-parameters and presets of ``jic-classifier``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from avnbench.training import TorchMethodConfig


class JicClassifierConfig(TorchMethodConfig):
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
    save_heatmap_png: bool = Field(
        default=True, description="write a slice + heat map overlay PNG per predicted case"
    )

    def trains_on(self, card):
        """Grades and landmarks always (the slice plane comes from the landmarks); the necrosis
        masks too when the lesion loss or the shifted planes (graded on their own labels) are on."""
        masks = self.lesion_guidance_weight > 0 or self.plane_jitter_mm > 0
        return ("grades", "masks", "landmarks") if masks else ("grades", "landmarks")

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
