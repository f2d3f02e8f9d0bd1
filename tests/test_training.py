"""avnbench.training: the toolkit torch methods train through."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from avnbench.errors import PluginError
from avnbench.methods import TrainingLog
from avnbench.training import (
    NotFittedError,
    TorchMethodConfig,
    channels_last,
    cpu_threads,
    load_state,
    native_bfloat16,
    precision,
    require_fitted,
    save_state,
    seed_everything,
    torch_generator,
    train_epochs,
)


def test_importing_the_toolkit_does_not_import_torch():
    code = "import sys, avnbench.training; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cpu_threads_restores_the_callers_setting_even_on_error():
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    with pytest.raises(RuntimeError):
        with cpu_threads(target):
            assert torch.get_num_threads() == target
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with cpu_threads(None):
        assert torch.get_num_threads() == before


def test_same_seed_same_stream():
    seed_everything(5)
    a = torch.rand(4)
    seed_everything(5)
    assert torch.equal(a, torch.rand(4))
    assert torch.equal(torch.rand(3, generator=torch_generator(1)), torch.rand(3, generator=torch_generator(1)))


@pytest.mark.parametrize(("device", "amp", "expected"), [("cpu", True, False), ("cpu", False, False)])
def test_amp_only_on_cuda(device, amp, expected):
    prec = precision(device, amp)
    assert prec.amp is expected and prec.device.type == device
    assert not prec.grad_scaler().is_enabled()


@pytest.mark.parametrize(("device", "asked"), [("cpu", True), ("cpu", False)])
def test_bfloat16_autocast_only_on_a_cpu_that_has_it(device, asked):
    prec = precision(device, amp=True, cpu_bfloat16=asked)
    assert prec.bfloat16 is (asked and native_bfloat16())
    assert not prec.amp and not prec.grad_scaler().is_enabled()  # bfloat16 needs no loss scaling
    conv = torch.nn.Conv3d(2, 2, 3)
    with prec.autocast():
        out = conv(torch.randn(1, 2, 4, 4, 4))
    assert out.dtype == (torch.bfloat16 if prec.bfloat16 else torch.float32)
    assert conv.weight.dtype == torch.float32


@pytest.mark.parametrize(
    ("conv", "shape", "memory_format"),
    [(torch.nn.Conv3d, (2, 2, 4, 6, 6), torch.channels_last_3d), (torch.nn.Conv2d, (2, 2, 6, 6), torch.channels_last)],
)
def test_channels_last_keeps_the_numbers_in_another_memory_order(conv, shape, memory_format):
    torch.manual_seed(0)
    net, x = torch.nn.Sequential(conv(2, 4, 3, padding=1), torch.nn.LeakyReLU(), conv(4, 3, 1)), torch.randn(shape)
    expected = net(x)
    fast_net, fast_x = channels_last(net), channels_last(x)
    assert fast_x.is_contiguous(memory_format=memory_format) and not x.is_contiguous(memory_format=memory_format)
    assert net[0].weight.is_contiguous(memory_format=memory_format)
    assert torch.allclose(fast_net(fast_x), expected, atol=1e-5)
    # off: the very same objects; other tensors and modules pass through
    assert channels_last(x, enabled=False) is x
    assert channels_last(torch.ones(3)).is_contiguous()
    linear = torch.nn.Linear(2, 2)
    assert channels_last(linear) is linear


def _model_with(value: float) -> torch.nn.Linear:
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(value)
    return model


@pytest.mark.parametrize(
    ("scores", "validate_every", "select_from", "best_epoch"),
    [
        ([0.1, 0.5, 0.3, 0.2], 1, 0, 1),  # the best validated epoch
        ([0.9, 0.5, 0.3, 0.2], 1, 2, 2),  # early epochs are never selected
        ([0.1, 0.9, 0.3, 0.2], 2, 0, 1),  # validated every 2nd epoch and after the last
        ([0.1, 0.2, 0.3, 0.8], 3, 0, 3),  # the last epoch is always validated
    ],
)
def test_keep_best_checkpoint(tmp_path, scores, validate_every, select_from, best_epoch):
    model = _model_with(0.0)
    reported = []
    log = TrainingLog(tmp_path, listener=reported.append)

    def train_epoch(epoch):
        with torch.no_grad():
            model.weight.fill_(float(epoch))  # the weights say which epoch they are from
        return {"train_loss": 1.0 / (epoch + 1)}

    result = train_epochs(
        model, epochs=4, train_epoch=train_epoch, checkpoint=tmp_path / "best.pt",
        validate=lambda epoch: {"val_score": scores[epoch]}, validate_every=validate_every,
        select_from=select_from, log=log,
    )  # fmt: skip
    assert result.best_epoch == best_epoch and result.best_score == scores[best_epoch]
    assert model.weight.item() == best_epoch  # restored
    assert load_state(_model_with(-1.0), tmp_path / "best.pt").weight.item() == best_epoch
    assert [(e.epoch, e.total) for e in reported] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    validated = [e.epoch - 1 for e in reported if "val_score" in e.values]
    assert validated == [k for k in range(4) if (k + 1) % validate_every == 0 or k == 3]


def test_without_validation_the_last_epoch_is_the_model(tmp_path):
    model = _model_with(0.0)

    def train_epoch(epoch):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        return {}

    result = train_epochs(model, epochs=3, train_epoch=train_epoch, checkpoint=tmp_path / "m.pt")
    assert (result.best_epoch, result.best_score, result.selection) == (2, None, "last_epoch")
    assert load_state(_model_with(-1.0), tmp_path / "m.pt").weight.item() == 2.0


def test_state_dicts_load_with_weights_only(tmp_path):
    save_state(_model_with(3.0), tmp_path / "w.pt")
    assert float(torch.load(tmp_path / "w.pt", weights_only=True)["weight"]) == 3.0


def test_not_fitted_is_a_one_line_plugin_error_naming_the_files(tmp_path):
    (tmp_path / "present.json").write_text("{}")
    with pytest.raises(NotFittedError) as error:
        require_fitted("some-method", tmp_path, "present.json", "model.pt")
    assert isinstance(error.value, PluginError)
    message = str(error.value)
    assert "\n" not in message and "model.pt" in message and "present.json" not in message
    assert "run fit first" in message and str(tmp_path) in message
    assert require_fitted("some-method", tmp_path, "present.json") == [tmp_path / "present.json"]


@pytest.mark.parametrize(("field", "value"), [("cpu_threads", 0), ("num_workers", -1), ("amp", "maybe")])
def test_shared_fields_are_validated(field, value):
    with pytest.raises(ValueError):
        TorchMethodConfig.model_validate({field: value})
