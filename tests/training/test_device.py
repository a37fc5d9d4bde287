"""Where a run computes: mixed precision and channels_last on a GPU by default, with switches; the CPU
path stays fp32 whatever precision says. (The CUDA choices are checked on a CUDA *device object*:
this machine has no GPU; bench/bench_gpu.py runs them on one.)"""

from __future__ import annotations

import pytest
import torch

from kiln.reporting import RecordingReporter
from kiln.training.config import TrainConfig
from kiln.training.device import Hardware, pick_precision
from kiln.training.distributed import Dist
from kiln.training.loop import train

CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")


@pytest.mark.parametrize("bf16", [True, False])
def test_mixed_precision_on_a_gpu_by_default(monkeypatch: pytest.MonkeyPatch, bf16: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert pick_precision("auto", CUDA) == (torch.bfloat16 if bf16 else torch.float16)
    assert pick_precision("fp32", CUDA) is None  # the switch
    assert pick_precision("bf16", CUDA) == torch.bfloat16
    assert pick_precision("fp16", CUDA) == torch.float16


@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16", "fp16"])
def test_the_cpu_stays_fp32(precision: str) -> None:
    assert pick_precision(precision, CPU) is None
    hw = Hardware(CPU, None, 1, Dist())
    assert not hw.loss_scaling and not hw.grad_scaler().is_enabled()
    with hw.autocast():
        assert not torch.is_autocast_enabled("cpu")


def test_fp16_scales_its_loss_bf16_does_not() -> None:
    fp16, bf16 = Hardware(CUDA, torch.float16, 1, Dist()), Hardware(CUDA, torch.bfloat16, 1, Dist())
    assert fp16.loss_scaling and not bf16.loss_scaling
    assert fp16.describe() == "cuda:0, float16 with loss scaling, channels_last"
    assert bf16.describe() == "cuda:0, bfloat16, channels_last"
    with pytest.raises(ValueError, match="precision"):
        pick_precision("fp8", CUDA)


def test_channels_last_is_a_switch(tiny, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The network and what it is fed follow the switch; the numbers do not depend on it."""
    from kiln.networks import definition

    seen: dict[bool, set[bool]] = {True: set(), False: set()}
    build = definition.NetworkDef.build

    def spying_build(self, *args, **kwargs):
        model = build(self, *args, **kwargs)
        # LeNet's second convolution: 20 channels in, where the two layouts differ (1 channel would not)
        first = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][1]

        def record(module, inputs):
            x = inputs[0]
            layout = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            weight = (
                module.weight.is_contiguous(memory_format=torch.channels_last) and not module.weight.is_contiguous()
            )
            seen[module.training].add((layout, weight))

        first.register_forward_pre_hook(record)
        return model

    monkeypatch.setattr(definition.NetworkDef, "build", spying_build)
    base = dict(network="lenet", train_epochs=1, batch_size=8, random_seed=3, lr_policy="fixed", device="cpu")
    runs = {}
    for on in (True, False):
        seen = {True: set(), False: set()}
        reporter = RecordingReporter()
        runs[on] = train(TrainConfig(**base, channels_last=on), tiny, tmp_path / str(on), reporter)
        assert seen[True] == {(on, on)} and seen[False] == {(on, on)}, (on, seen)  # training and validation
        assert any(("channels_last" if on else "NCHW") in line for line in reporter.lines if line.startswith("Device"))
    assert runs[False]["final"]["val_loss"] == pytest.approx(runs[True]["final"]["val_loss"], rel=1e-4)
