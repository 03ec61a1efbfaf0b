"""Each compression path changes what it claims (params, FLOPs, bytes) at a measured accuracy cost."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest
import torch
import torch.nn.functional as F

from gridwise_trainer.compression.distillation import distillation_loss
from gridwise_trainer.compression.precision import PrecisionPolicy
from gridwise_trainer.compression.pruning import prune_structured
from gridwise_trainer.compression.quantization import quantize_for_inference
from gridwise_trainer.config import CompressionSettings, DistillationSettings
from gridwise_trainer.data import Dataset
from gridwise_trainer.loop import evaluate
from gridwise_trainer.model import (
    build_model,
    count_parameters,
    default_spec,
    estimate_flops,
    serialized_size,
    student_spec,
)

from .conftest import make_config, make_trainer


@pytest.fixture(scope="module")
def trained_cnn(tmp_path_factory: pytest.TempPathFactory, digits: Dataset) -> torch.nn.Sequential:
    res = make_trainer(make_config(tmp_path_factory.mktemp("cnn"), total_steps=300), digits).run()
    assert isinstance(res.model, torch.nn.Sequential)
    return res.model.eval()


def test_structured_pruning_really_shrinks(trained_cnn: torch.nn.Sequential, digits: Dataset) -> None:
    x = digits.x_test
    pruned = prune_structured(trained_cnn, 0.5)
    first = next(m for m in pruned if isinstance(m, torch.nn.Conv2d))
    assert first.out_channels == 8  # 16 -> 8 channels
    p0, p1 = count_parameters(trained_cnn), count_parameters(pruned)
    f0, f1 = estimate_flops(trained_cnn, x), estimate_flops(pruned, x)
    s0, s1 = serialized_size(trained_cnn), serialized_size(pruned)
    assert p1 < 0.35 * p0 and f1 < 0.35 * f0 and s1 < 0.4 * s0  # ~quadratic in width for inner layers
    acc0 = evaluate(trained_cnn, x, digits.y_test)
    acc1 = evaluate(pruned, x, digits.y_test)
    print(f"\npruning 0.5: params {p0}->{p1}, FLOPs {f0}->{f1}, bytes {s0}->{s1}, acc {acc0:.3f}->{acc1:.3f}")
    assert pruned(x[:4]).shape == (4, 10)
    assert acc1 > 0.3  # before fine-tuning; the loop fine-tunes after pruning (next test)


def test_pruning_in_the_loop_keeps_accuracy(tmp_path: Path, digits: Dataset) -> None:
    cfg = make_config(tmp_path, total_steps=300, prune_at_fraction=0.5)
    res = make_trainer(cfg, digits, prune_amount=0.5).run()
    assert res.accuracy is not None and res.accuracy >= 0.90
    assert count_parameters(res.model) < 0.35 * res.dense_params


def test_int8_quantization_shrinks_linear_weights(digits: Dataset, tmp_path: Path) -> None:
    mlp = make_trainer(make_config(tmp_path, total_steps=300), digits, model="mlp").run().model.eval()
    q, n_linear = quantize_for_inference(mlp)
    acc0 = evaluate(mlp, digits.x_test, digits.y_test)
    acc1 = evaluate(q, digits.x_test, digits.y_test)
    s0, s1 = serialized_size(mlp), serialized_size(q)
    print(f"\nint8-dynamic: bytes {s0}->{s1}, acc {acc0:.3f}->{acc1:.3f}")
    assert n_linear == 3
    assert s1 < 0.45 * s0
    assert acc1 >= acc0 - 0.02
    # The copy is of the Sequential built for --model mlp (quantize_for_inference returns a Module).
    seq = cast("torch.nn.Sequential", q)
    assert "Quantized" in type(seq[1].weight).__name__  # a torchao tensor subclass, not a fake
    assert evaluate(mlp, digits.x_test, digits.y_test) == acc0  # the original is untouched


def test_hinton_loss_properties() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(8, 10, requires_grad=True), torch.randn(8, 10)
    y = torch.randint(0, 10, (8,))
    assert torch.allclose(distillation_loss(s, t, y, 4.0, 0.0), F.cross_entropy(s, y))
    assert distillation_loss(t, t, y, 3.0, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    kl = F.kl_div(F.log_softmax(s / 4, -1), F.softmax(t / 4, -1), reduction="batchmean")
    assert distillation_loss(s, t, y, 4.0, 1.0).item() == pytest.approx(16 * kl.item(), rel=1e-5)


def test_distilled_student_is_smaller_and_learns(
    trained_cnn: torch.nn.Sequential, digits: Dataset, tmp_path: Path
) -> None:
    comp = CompressionSettings(distillation=DistillationSettings(True, 2.0, 0.5))
    cfg = make_config(tmp_path, total_steps=300, compression=comp)
    spec = student_spec(default_spec("cnn"))
    res = make_trainer(cfg, digits, name="student", spec=spec, teacher=trained_cnn).run()
    teacher_acc = evaluate(trained_cnn, digits.x_test, digits.y_test)
    print(
        f"\ndistillation: params {count_parameters(trained_cnn)}->{count_parameters(res.model)}, "
        f"acc {teacher_acc:.3f}->{res.accuracy:.3f}"
    )
    assert count_parameters(res.model) < 0.1 * count_parameters(trained_cnn)
    assert res.accuracy is not None and res.accuracy >= 0.85


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_changes_compute_dtype_and_learns(
    precision: str, digits: Dataset, tmp_path: Path
) -> None:
    policy = PrecisionPolicy(precision, torch.device("cpu"))  # type: ignore[arg-type]
    model = build_model(default_spec("mlp"))
    with policy.autocast(policy.active(0)):
        out = model(digits.x_test[:4])
    assert out.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    assert policy.scaler.is_enabled() == (precision == "fp16")
    comp = CompressionSettings(mixed_precision=precision)  # type: ignore[arg-type]
    res = make_trainer(make_config(tmp_path, total_steps=300, compression=comp), digits, model="mlp").run()
    assert res.precision == {"bf16": "bfloat16", "fp16": "float16"}[precision]
    assert res.accuracy is not None and res.accuracy >= 0.90


def test_precision_warmup_schedule() -> None:
    policy = PrecisionPolicy("bf16", torch.device("cpu"), warmup_steps=10)
    assert [policy.active(s) for s in (0, 9, 10)] == ["none", "none", "bf16"]
    policy.override = "none"
    assert policy.active(50) == "none"
