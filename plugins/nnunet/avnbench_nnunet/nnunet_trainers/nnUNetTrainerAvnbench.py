"""nnU-Net trainer whose schedule and split come from a job file written by avnbench.

nnU-Net finds trainers by class name, in its own package or in the folders named by the
``nnUNet_extTrainer`` environment variable (nnunetv2 2.8). avnbench points that variable at
this folder, so ``nnUNetv2_train ... -tr nnUNetTrainerAvnbench`` and nnU-Net's predictor both
find this class without copying anything into nnU-Net's package tree.

This module imports nothing from avnbench on purpose: nnU-Net imports it as a top-level module.

The job file ``avnbench_job.json`` sits in the trainer's output folder (``fold_<k>``) and holds

- ``num_epochs``, ``num_iterations_per_epoch``, ``num_val_iterations_per_epoch``, ``save_every``,
  ``initial_lr``, ``oversample_foreground_percent`` and optionally ``batch_size`` (the preset's
  training schedule; nnU-Net's attributes of the same names), ``plot_every`` (epochs between
  redraws of ``progress.png``; nnU-Net redraws it every epoch), ``cpu_bfloat16`` (on a CPU with
  native bfloat16, the network's forward passes run under bfloat16 autocast; nnU-Net's own
  autocast covers CUDA only), and
- ``train`` / ``val``: the case ids to train on and to compute nnU-Net's per-epoch pseudo Dice
  on. avnbench passes the fold's training cases split into train and an internal validation
  set, so the benchmark fold's own validation cases never reach the trainer.

After every epoch the trainer appends one JSON line to ``avnbench_epochs.jsonl`` in the same
folder (``epoch`` 1-based, ``total``, ``train_loss``, ``val_loss``, ``pseudo_dice``,
``pseudo_dice_ema``, ``lr``, ``epoch_seconds``); avnbench's method reads the file while nnU-Net
trains and reports each line as an epoch of the fold.

Without a job file the trainer behaves exactly like ``nnUNetTrainer`` (plus that file).
"""

import json
import os

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

JOB_FILE = "avnbench_job.json"
EPOCHS_FILE = "avnbench_epochs.jsonl"
# nnU-Net's per-epoch log entries and the names avnbench reports them under
EPOCH_VALUES = {
    "train_losses": "train_loss", "val_losses": "val_loss", "mean_fg_dice": "pseudo_dice",
    "ema_fg_dice": "pseudo_dice_ema", "lrs": "lr",
}  # fmt: skip


def _limit_threads_with_one_controller():
    """nnU-Net's data loader caps the BLAS and OpenMP pools at one thread around every batch it
    builds (``threadpool_limits(limits=1)``). Each call makes a new threadpoolctl controller,
    which walks every shared library the process has loaded: 8 % of a CPU ``quick`` 2d training
    (py-spy, augmentation in the training process, ``benchmarks/README.md``). threadpoolctl's
    cached controller sets the same limits without the walk; the loader's code is unchanged."""
    import threadpoolctl
    from nnunetv2.training.dataloading import data_loader

    cached = getattr(threadpoolctl, "get_cached_controller", None)
    if cached is None:  # an older threadpoolctl: keep nnU-Net's call as it is
        return

    def threadpool_limits(limits=None, user_api=None):
        return cached().limit(limits=limits, user_api=user_api)

    data_loader.threadpool_limits = threadpool_limits


def _native_bfloat16(device) -> bool:
    """Whether ``device`` is a CPU that computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere
    bfloat16 is emulated and slower than float32."""
    import torch

    if device.type != "cpu":
        return False
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def _forward_in_bfloat16(network) -> None:
    """Run ``network``'s forward passes under CPU bfloat16 autocast, returning float32 outputs so
    that nnU-Net's loss and pseudo Dice are computed in float32 as before: the CPU counterpart of
    the float16 autocast nnU-Net trains with on a GPU. Convolutions run in bfloat16 (oneDNN);
    weights, gradients and optimizer state stay float32. A ``quick`` 3d fold trained in 195 s
    instead of 245 s on the build machine, two folds side by side (``benchmarks/README.md``); the
    2d network gained nothing. The state dict is untouched: checkpoints and exported weights
    load as usual, and prediction runs in float32."""
    import torch

    forward = network.forward

    def forward_bfloat16(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = forward(x)
        return [o.float() for o in out] if isinstance(out, (list, tuple)) else out.float()

    network.forward = forward_bfloat16


class nnUNetTrainerAvnbench(nnUNetTrainer):
    def __init__(self, plans, configuration, fold, dataset_json, device=None):
        import torch

        super().__init__(plans, configuration, fold, dataset_json,
                         device if device is not None else torch.device("cuda"))
        self.avnbench_job = {}
        job_path = os.path.join(self.output_folder, JOB_FILE) if self.output_folder else None
        if job_path and os.path.isfile(job_path):
            with open(job_path) as f:
                self.avnbench_job = json.load(f)
        job = self.avnbench_job
        self.num_epochs = int(job.get("num_epochs", self.num_epochs))
        self.num_iterations_per_epoch = int(job.get("num_iterations_per_epoch", self.num_iterations_per_epoch))
        self.num_val_iterations_per_epoch = int(
            job.get("num_val_iterations_per_epoch", self.num_val_iterations_per_epoch)
        )
        self.save_every = int(job.get("save_every", self.save_every))
        self.initial_lr = float(job.get("initial_lr", self.initial_lr))
        self.oversample_foreground_percent = float(
            job.get("oversample_foreground_percent", self.oversample_foreground_percent)
        )

    def initialize(self):
        super().initialize()
        self.cpu_bfloat16 = bool(self.avnbench_job.get("cpu_bfloat16")) and _native_bfloat16(self.device)
        if self.cpu_bfloat16:
            _forward_in_bfloat16(self.network)
            self.print_to_log_file("avnbench: forward passes in bfloat16 autocast on this CPU")

    def on_train_start(self):
        _limit_threads_with_one_controller()
        super().on_train_start()

    def _set_batch_size_and_oversample(self):
        super()._set_batch_size_and_oversample()
        if self.avnbench_job.get("batch_size") and not self.is_ddp:
            self.batch_size = int(self.avnbench_job["batch_size"])

    def do_split(self):
        if "train" not in self.avnbench_job:
            return super().do_split()
        if self.dataset_class is None:
            from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        tr_keys = list(self.avnbench_job["train"])
        val_keys = list(self.avnbench_job.get("val") or [])
        if not val_keys:
            # nnU-Net's loop needs a validation loader; with no internal validation cases its
            # per-epoch pseudo Dice is computed on training cases (it selects nothing here).
            val_keys = tr_keys
        self.print_to_log_file(
            f"avnbench split: {len(tr_keys)} training and {len(val_keys)} internal validation cases"
        )
        return tr_keys, val_keys

    def on_epoch_end(self):
        # nnU-Net redraws progress.png after every epoch (about 0.7 s on a CPU core); CPU presets
        # with short epochs redraw it every few epochs and always after the last one.
        every = int(self.avnbench_job.get("plot_every", 1))
        last = self.current_epoch >= self.num_epochs - 1
        if every <= 1 or last or (self.current_epoch + 1) % every == 0:
            super().on_epoch_end()
        else:
            self.logger.plot_progress_png = lambda output_folder: None
            try:
                super().on_epoch_end()
            finally:
                del self.logger.plot_progress_png  # the class's method again
        self._report_epoch()

    def _report_epoch(self):
        """Append the epoch that just ended (nnU-Net has advanced current_epoch past it)."""
        if self.local_rank != 0 or not self.output_folder:
            return
        log = self.logger.get_checkpoint()  # the per-epoch lists, by key
        record = {"epoch": int(self.current_epoch), "total": int(self.num_epochs)}
        for key, name in EPOCH_VALUES.items():
            if log.get(key):
                record[name] = float(log[key][-1])
        starts, ends = log.get("epoch_start_timestamps"), log.get("epoch_end_timestamps")
        if starts and ends:
            record["epoch_seconds"] = float(ends[-1] - starts[-1])
        with open(os.path.join(self.output_folder, EPOCHS_FILE), "a") as f:
            f.write(json.dumps(record) + "\n")

    def save_checkpoint(self, filename: str) -> None:
        # avnbench always predicts with checkpoint_final; a "best" checkpoint would be selected on
        # nnU-Net's validation set, which avnbench does not use for selection.
        if os.path.basename(filename) == "checkpoint_best.pth" and not self.avnbench_job.get("save_best", False):
            return
        super().save_checkpoint(filename)
