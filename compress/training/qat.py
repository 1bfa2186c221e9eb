"""Stage: quantization-aware KD recovery, so that ORT dynamic int8 costs little accuracy.

ORT dynamic int8 (what `compress quantize` applies) rounds each MatMul's weight to int8,
symmetric (scale max|w| / 127, per tensor or per output channel), and its input, on every call,
to uint8 over that call's own range including zero (scale (max - min) / 255, zero point
round(-min / scale)). While this stage trains, the Linear layers of the encoder compute with
exactly those rounded values, gradients passing straight through the rounding (Jacob et al.
2018), so the weights settle where the rounding costs little. The variant it saves is fp32;
`quantize` then applies the real int8 and measures the artifact.

Where this differs from ORT, knowingly: ORT's fused attention rounds query, key and value with
one weight scale, here each projection has its own; ORT also quantizes the embeddings and the
pooler, which stay fp32 here; under bf16 autocast the product of the rounded values is computed
in bf16, like every other training matmul (the rounding itself is exact: tests/test_qat.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compress.configs import KD, TrainConfig
from compress.model.arch import encoder_layers
from compress.training.recovery import shrink
from compress.variant import Variant


def int8_weight(weight: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """`weight` [out, in] rounded as ORT rounds an int8 weight: symmetric, in [-127, 127]."""
    w = weight.float()
    if per_channel:
        scale = (w.detach().abs().amax(dim=1) / 127).clamp(min=1e-12)
        return torch.fake_quantize_per_channel_affine(w, scale, torch.zeros_like(scale, dtype=torch.int32), 0,
                                                      -127, 127)
    scale = (w.detach().abs().max() / 127).clamp(min=1e-12)
    return torch.fake_quantize_per_tensor_affine(w, scale.reshape(1), torch.zeros(1, dtype=torch.int32,
                                                                                   device=w.device), -127, 127)


def uint8_activation(x: torch.Tensor) -> torch.Tensor:
    """`x` rounded as ORT's DynamicQuantizeLinear rounds it: uint8 over this call's range, zero included."""
    x = x.float()
    low, high = x.detach().min().clamp(max=0), x.detach().max().clamp(min=0)
    scale = ((high - low) / 255).clamp(min=1e-12)
    zero_point = (-low / scale).round().clamp(0, 255).to(torch.int32)
    return torch.fake_quantize_per_tensor_affine(x, scale.reshape(1), zero_point.reshape(1), 0, 255)


def int8_linear(linear: nn.Linear, x: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """What ORT's int8 MatMul computes for `linear` on `x` (the bias is added in fp32, as ORT does)."""
    out = F.linear(uint8_activation(x), int8_weight(linear.weight, per_channel))
    return out + linear.bias.float() if linear.bias is not None else out


def simulate_int8(model: nn.Module, per_channel: bool) -> int:
    """Make every Linear of the encoder layers compute in simulated int8 while training (evaluation
    stays fp32, and the weights saved are fp32). Returns how many Linear layers it changed."""
    linears = [m for m in encoder_layers(model).modules() if isinstance(m, nn.Linear)]
    for linear in linears:
        plain = linear.forward
        linear.forward = lambda x, m=linear, plain=plain: int8_linear(m, x, per_channel) if m.training else plain(x)
    return len(linears)


def default_name(variant: Variant) -> str:
    return f"{variant.record.name}-qat"


def qat(variant: Variant, per_channel: bool, train_config: TrainConfig, kd: KD = KD(), name: str | None = None,
        progress: bool = True, replace: bool = False) -> Variant:
    """Recover `variant` by KD for `train_config.epochs` while its Linear layers see int8 rounding; KD
    settings not given in `kd` are those `variant` was trained with (compress.training.kd)."""

    def simulate(model, task, tokenizer, train: TrainConfig) -> dict:
        return {"qat": {"simulated_linear_layers": simulate_int8(model, per_channel), "per_channel": per_channel,
                        "rounding": "ORT dynamic int8: weights int8 symmetric, inputs uint8 per call"}}

    return shrink(variant, "qat", name or default_name(variant), simulate, kd, {"per_channel": per_channel},
                  train_config, progress, replace)
