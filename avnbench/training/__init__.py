"""Tools for torch methods: the plugin author's guide to training with avnbench.

A torch method subclasses :class:`avnbench.api.Method` as any other; this package holds what
every torch method would otherwise write again. Import it at the top of a plugin module freely:
nothing here imports torch until a function is called, so ``avnbench methods`` stays fast.

Config
    Derive the method's ``Config`` from :class:`TorchMethodConfig`: it adds ``amp`` (float16 on
    CUDA), ``cpu_bfloat16`` (bfloat16 on a CPU that has it natively), ``cpu_threads`` (torch
    threads on a CPU, default 1) and ``num_workers`` (data-loading processes) to ``seed``.

fit
    ::

        def fit(self, train_cases, val_cases, workdir, device):
            cfg = self.config
            with cpu_threads(cfg.cpu_threads):
                seed_everything(cfg.seed)                 # python, numpy, torch, cuDNN flags
                prec = precision(device, cfg.amp, cfg.cpu_bfloat16)  # float16 on CUDA,
                                                          # bfloat16 on a capable CPU
                model = build(...).to(prec.device)
                model = channels_last(model)   # optional: NDHWC, faster 3D convs on a CPU;
                                               # pass each batch through it too
                scaler = prec.grad_scaler()

                def train_epoch(epoch):
                    ...
                    optimizer.zero_grad(set_to_none=True)
                    with prec.autocast():
                        loss = loss_fn(model(x), y)
                    optimizer_step(loss, optimizer, scaler, clip_grad_norm=12.0,
                                   parameters=model.parameters())
                    return {"train_loss": mean_loss}

                result = train_epochs(
                    model, epochs=cfg.epochs, train_epoch=train_epoch,
                    validate=lambda epoch: {"val_dice": ...} if val_cases else None,
                    checkpoint=workdir / "best.pt", log=self.log,
                )

    :func:`train_epochs` validates every ``validate_every`` epochs and after the last, keeps the
    best weights (``torch.save`` of the state dict) and reports each epoch through
    ``self.log.epoch(i, N, **values)`` — the runner shows ``epoch i/N``, the loss and an ETA, and
    logs the values as live MLflow curves. A method with its own loop (or an external trainer)
    calls ``self.log.epoch`` itself.

predict
    ::

        model_file, = require_fitted(self.card.name, workdir, "best.pt")  # NotFittedError
        model = load_state(build(...), model_file)           # torch.load(weights_only=True)
        for case in cases:                                   # avnbench.api.PredictCase
            with cpu_threads(cfg.cpu_threads):               # per case, not across the yield
                ...
            yield SegmentationPrediction(...)
"""

from avnbench.training.config import TorchMethodConfig
from avnbench.training.device import Precision, channels_last, native_bfloat16, optimizer_step, precision
from avnbench.training.errors import NotFittedError, require_fitted
from avnbench.training.loop import TrainingResult, endless, load_state, save_state, train_epochs
from avnbench.training.seeding import seed_everything, torch_generator
from avnbench.training.threads import cpu_threads

__all__ = [
    "NotFittedError", "Precision", "TorchMethodConfig", "TrainingResult", "channels_last", "cpu_threads", "endless",
    "load_state", "native_bfloat16", "optimizer_step", "precision", "require_fitted", "save_state", "seed_everything",
    "torch_generator", "train_epochs",
]
