"""nnU-Net steps run in a child process: ``python -m avnbench_nnunet._jobs STEP SPEC.json``.

Why a child process: nnU-Net reads its folders (``nnUNet_raw`` ...), its trainer search path
(``nnUNet_extTrainer``) and its worker counts from environment variables, starts data
augmentation worker processes, sets torch's thread count and prints progress to stdout. In a
child, all of that is scoped to one step: the parent's environment, threads and output stay as
they were, and nnU-Net's output goes to a log file. Steps:

- ``preprocess``: fingerprint extraction, planning and preprocessing of one dataset;
- ``train``: one configuration and fold with ``nnUNetTrainerAvnbench`` (``checkpoint_final``;
  nnU-Net's own final validation is not run), then the network weights are exported as a plain
  state dict (``avnbench_weights.pth``, loadable with ``torch.load(weights_only=True)``) and
  the per-epoch curves as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TRAINER_NAME = "nnUNetTrainerAvnbench"
PLANS_NAME = "nnUNetPlans"
WEIGHTS_FILE = "avnbench_weights.pth"
MODEL_FILE = "avnbench_model.json"
CURVES_FILE = "avnbench_curves.json"


def preprocess(spec: dict) -> None:
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess as run_preprocessing,
    )

    dataset_id = int(spec["dataset_id"])
    n_proc = int(spec["num_processes"])
    extract_fingerprints([dataset_id], num_processes=n_proc, check_dataset_integrity=False,
                         clean=True, verbose=False, show_progress_bar=False)
    # avnbench validated the dataset when loading it; nnU-Net's own integrity check would read
    # every file again. Planning: nnU-Net's default planner and plans (nnUNetPlans), as in the seed.
    plan_experiments([dataset_id])
    run_preprocessing([dataset_id], PLANS_NAME, configurations=tuple(spec["configurations"]),
                      num_processes=[n_proc] * len(spec["configurations"]), verbose=False,
                      show_progress_bar=False)


def train(spec: dict) -> None:
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args
    from torch._dynamo import OptimizedModule

    from avnbench.training import seed_everything

    # nnU-Net's own cuDNN choice (benchmark mode on a GPU) is kept: deterministic=False
    seed_everything(int(spec["seed"]), deterministic=False)
    device = torch.device(spec["device"])
    if device.type == "cpu":
        torch.set_num_threads(int(spec["num_threads"]))
    else:
        torch.set_num_threads(1)  # nnU-Net's own setting for GPU training
        torch.backends.cudnn.benchmark = True

    trainer = get_trainer_from_args(spec["dataset_name"], spec["configuration"], int(spec["fold"]),
                                    TRAINER_NAME, PLANS_NAME, False, device=device)
    trainer.run_training()

    network = trainer.network
    if isinstance(network, OptimizedModule):
        network = network._orig_mod
    out = Path(trainer.output_folder)
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    torch.save(state, out / WEIGHTS_FILE)
    logging = trainer.logger.get_checkpoint()
    curves = {
        key: [float(v) for v in logging.get(key, [])]
        for key in ("train_losses", "val_losses", "mean_fg_dice", "ema_fg_dice", "lrs")
    }
    curves["epoch_seconds"] = [
        float(e - s) for s, e in zip(logging["epoch_start_timestamps"], logging["epoch_end_timestamps"])
    ]
    (out / CURVES_FILE).write_text(json.dumps(curves))
    axes = trainer.inference_allowed_mirroring_axes
    model = {
        "trainer_name": type(trainer).__name__,
        "configuration": spec["configuration"],
        "inference_allowed_mirroring_axes": list(axes) if axes is not None else None,
        "num_epochs": trainer.num_epochs,
        "num_iterations_per_epoch": trainer.num_iterations_per_epoch,
        "batch_size": int(trainer.batch_size),
        "patch_size": [int(p) for p in trainer.configuration_manager.patch_size],
        "cpu_bfloat16": bool(getattr(trainer, "cpu_bfloat16", False)),  # used, not only asked for
    }
    # Written last: its presence marks a finished, exported training.
    (out / MODEL_FILE).write_text(json.dumps(model, indent=2))


def main(argv: list[str]) -> int:
    step, spec_path = argv
    spec = json.loads(Path(spec_path).read_text())
    {"preprocess": preprocess, "train": train}[step](spec)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
