"""A variant as something to run: its ONNX artifact, its PyTorch model, or PyTorch's own dynamic int8 of one."""

from __future__ import annotations

import torch

from compress.errors import UserError, first_line
from compress.model.checkpoint import load_classifier
from compress.variant import Variant, parent_path
from compress.workspace import inside


def torch_int8(model: torch.nn.Module) -> torch.nn.Module:
    """PyTorch dynamic int8 of every Linear: the baseline the ORT variants are compared with."""
    return torch.ao.quantization.quantize_dynamic(model.eval(), {torch.nn.Linear}, dtype=torch.qint8)


def onnx_artifact(variant: Variant):
    artifact = variant.record.extra.get("artifact")
    if artifact:  # a quantized variant: its artifact is what it is
        return inside(variant.workspace, variant.path / artifact) if artifact.endswith(".onnx") else None
    path = inside(variant.workspace, variant.path / "onnx" / "model.onnx")  # read through no link either
    return path if path.is_file() else None


def torch_model(variant: Variant, device: str):
    """The variant in eager PyTorch on `device`: its checkpoint, or (CPU only) its parent re-quantized
    with its saved int8 weights."""
    if variant.record.params.get("backend") == "torch":
        if device != "cpu":
            return None
        model = torch_int8(load_classifier(parent_path(variant)))
        artifact = variant.path / variant.record.extra["artifact"]
        try:
            model.load_state_dict(torch.load(artifact, weights_only=False))
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file fails in pickle, zip or torch
            raise UserError(f"cannot load the int8 weights {artifact}: {first_line(exc)}") from None
        return model
    if (variant.path / "model.safetensors").is_file():
        return load_classifier(variant.path).to(device).eval()
    return None
