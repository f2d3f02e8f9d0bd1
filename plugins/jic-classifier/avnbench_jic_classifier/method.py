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
from pathlib import Path

import numpy as np

from avnbench.api import (
    Case,
    ClassificationPrediction,
    ConfigError,
    DataError,
    Method,
    MethodCard,
    PredictCase,
    jic_classes,
)
from avnbench.training import (
    cpu_threads,
    load_state,
    optimizer_step,
    precision,
    require_fitted,
    seed_everything,
    torch_generator,
    train_epochs,
)
from avnbench_jic_classifier.augmentation import augment
from avnbench_jic_classifier.config import JicClassifierConfig
from avnbench_jic_classifier.inputs import (
    class_weights,
    labelled_inputs,
    necrosis_map,
    network_input,
    prediction_slice,
    upsample_cam,
)
from avnbench_jic_classifier.network import build_network

CHECKPOINT_FILE = "jic_classifier.pt"
MODEL_FILE = "jic_classifier.json"
NETWORK_FIELDS = (
    "architecture", "widen_factor", "stem_stride", "stem_max_pool", "input_size",
    "position_channels", "pooling", "head",
)  # fmt: skip
EVAL_BATCH = 64


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
        predicts="jic",
        uses_landmarks=True,  # the slice plane and the position channels come from them
        trains_on=("grades", "masks", "landmarks"),
    )
    Config = JicClassifierConfig

    def fit(
        self, train_cases: Sequence[Case], val_cases: Sequence[Case], workdir: Path, device: str
    ) -> None:
        """Train on the training cases that have a reference JIC type; keep the epoch that
        does best on ``val_cases`` (accuracy, then loss; among the second half of the
        epochs). Cases without necrosis on the mid-coronal slice (JIC None) have no class and
        are left out of training."""
        with cpu_threads(self.config.cpu_threads):
            self._fit(train_cases, val_cases, Path(workdir), device)

    def _fit(
        self, train_cases: Sequence[Case], val_cases: Sequence[Case], workdir: Path, device: str
    ) -> None:
        import torch
        import torch.nn.functional as F

        config: JicClassifierConfig = self.config  # type: ignore[assignment]
        workdir.mkdir(parents=True, exist_ok=True)
        prec = precision(device, config.amp)
        seed_everything(config.seed)
        generator = torch_generator(config.seed)

        train_x, train_masks, train_y = labelled_inputs(train_cases, config)
        if len(train_y) == 0:
            raise DataError(
                "jic-classifier: none of the training cases has a reference JIC type (no "
                "necrosis on any mid-coronal slice); it needs cases with necrosis to learn from"
            )
        val_x, _, val_y = labelled_inputs(val_cases, config)
        weights = class_weights(train_y.tolist(), len(jic_classes()), config.class_weighting)
        if self.log:
            self.log.param("train_cases_with_jic", sum(c.meta.jic is not None for c in train_cases))
            self.log.param("train_planes", len(train_y))
            self.log.param("val_cases_with_jic", sum(c.meta.jic is not None for c in val_cases))
            self.log.param("val_planes", len(val_y))
            self.log.param("class_weights", dict(zip(jic_classes(), weights)))

        model = build_network(config).to(prec.device)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
        train_loss_fn = torch.nn.CrossEntropyLoss(
            weight=torch.tensor(weights, dtype=torch.float32, device=prec.device)
        )
        scaler = prec.grad_scaler()
        # masks ride along as a last channel so that augmentation moves them with the image
        xm_all = torch.from_numpy(np.concatenate([train_x, train_masks], axis=1))
        y_all = torch.from_numpy(train_y)

        def train_epoch(epoch: int) -> dict[str, float]:
            model.train()
            order = torch.randperm(len(y_all), generator=generator)
            epoch_loss, seen = 0.0, 0
            for batch in _batches(order, config.batch_size):
                xm = xm_all[batch]
                if config.augment:
                    xm = augment(xm, config, generator)
                xm, y = xm.to(prec.device), y_all[batch].to(prec.device)
                x, mask = xm[:, :-1], xm[:, -1:]
                optimizer.zero_grad(set_to_none=True)
                with prec.autocast():
                    logits, lesion_logits = model.forward_train(x)
                    loss = train_loss_fn(logits.float(), y)
                    if config.lesion_guidance_weight > 0:
                        target = F.adaptive_avg_pool2d(mask, lesion_logits.shape[-2:])
                        loss = loss + config.lesion_guidance_weight * (
                            F.binary_cross_entropy_with_logits(lesion_logits.float(), target)
                        )
                optimizer_step(loss, optimizer, scaler)
                epoch_loss += loss.item() * len(batch)
                seen += len(batch)
            scheduler.step()
            return {"train_loss": epoch_loss / seen}

        def validate(epoch: int) -> dict[str, float]:
            val_loss, val_accuracy = _evaluate(model, val_x, val_y, prec.device)
            return {"val_loss": val_loss, "val_accuracy": val_accuracy}

        started = time.perf_counter()
        result = train_epochs(
            model,
            epochs=config.epochs,
            train_epoch=train_epoch,
            validate=validate if len(val_y) else None,
            score=lambda values: (values["val_accuracy"], -values["val_loss"]),
            # only the second half (annealed learning rate) is eligible: on a handful of
            # validation cases an early, unstable epoch's lucky score would otherwise win
            select_from=config.epochs // 2,
            checkpoint=workdir / CHECKPOINT_FILE,
            log=self.log,
            restore_best=False,  # fit ends here; predict loads the checkpoint itself
        )
        best_epoch = result.best_epoch

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
        self, cases: Sequence[PredictCase], workdir: Path, device: str
    ) -> Iterator[ClassificationPrediction]:
        """Per case: JIC class probabilities and a heat map on the default mid-coronal grid (same
        shape as ``mid_coronal_slice(...).array``): Grad-CAM of the predicted class on layer4
        for the softmax head; for the lesion_extent head the network's necrosis probability
        map, from which its class probabilities are read (its class-activation equivalent)."""
        import torch
        from monai.visualize import GradCAM

        config: JicClassifierConfig = self.config  # type: ignore[assignment]
        model_file, checkpoint = require_fitted(self.card.name, Path(workdir), MODEL_FILE, CHECKPOINT_FILE)
        saved = json.loads(model_file.read_text())
        if tuple(saved["classes"]) != jic_classes():
            raise ConfigError(f"{model_file}: classes {saved['classes']} != {jic_classes()}")
        network_config = config.model_copy(update=saved["network"])
        torch_device = precision(device, config.amp).device
        model = load_state(build_network(network_config), checkpoint)
        model.to(torch_device).eval()
        gradcam = network_config.head == "softmax"
        cam = GradCAM(nn_module=model, target_layers="resnet.layer4") if gradcam else None

        for case in cases:
            plane = prediction_slice(case)
            x = network_input(plane, case, network_config)[None].to(torch_device)
            # threads set per case, not across the yield: the caller's code keeps its own
            with cpu_threads(config.cpu_threads):
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
