"""What we run on: the device, the precision it trains fastest in, and a record of the machine."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
from functools import lru_cache

import torch

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
PACKAGES = ("torch", "transformers", "datasets", "accelerate", "onnx", "onnxruntime", "compress")


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    model, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    return {"model": model, "flags": [f for f in ISA_FLAGS if f in flags]}


def package_versions() -> dict:
    versions = {}
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def machine() -> dict:
    """The facts a measurement needs beside it: CPU, ISA flags, cores, threads, GPU, versions."""
    info = {
        "cpu": cpu_info()["model"],
        "flags": cpu_info()["flags"],
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "versions": package_versions(),
    }
    return info


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def training_precision(requested: str = "auto") -> str:
    """bf16 autocast where the hardware has it (this CPU: AVX-512 BF16/AMX; 1.25x fp32's training throughput).

    See benchmarks/results/teacher.json for the fp32 against bf16 measurement behind the default.
    """
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    flags = cpu_info()["flags"]
    return "bf16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "fp32"


def kernels_for_many_shapes() -> None:
    """Batches padded per batch come in many shapes. cuDNN's attention builds a kernel for each new
    shape (on an H200 the first pass over SST-2's lengths took 4x the second), so on a GPU
    PyTorch's own flash and memory-efficient attention kernels, which take any shape, run instead."""
    if torch.cuda.is_available():
        torch.backends.cuda.enable_cudnn_sdp(False)


def autocast(precision: str, device_type: str):
    """The autocast context for inference in `precision` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device_type, dtype=dtype)
