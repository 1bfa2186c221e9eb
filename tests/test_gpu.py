"""The device-generic code paths: run on the CPU everywhere, and on CUDA where a GPU is present.

Tests marked `cuda` skip cleanly without a GPU; none asserts which device a stage ran on.
"""

import os
import subprocess
import sys

import pytest
import torch

from compress import distributed
from compress.configs import DistillConfig
from compress.errors import UserError
from compress.runtime.latency import in_precision, torch_latency_ms
from compress.stages.bench import bench, precisions
from compress.stages.distill import distill
from compress.stages.report import build, runtime_group
from compress.variant import Variant

from conftest import FAST

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
SHAPES = [(1, 16), (4, 32)]


def test_latency_code_is_device_generic_on_the_cpu(tiny_teacher):
    from compress.model.checkpoint import load_classifier

    model = load_classifier(tiny_teacher[0].path)
    timing = torch_latency_ms(model, 2, 16, runs=30, warmup=2, vocab_size=model.config.vocab_size)
    assert 0 < timing["p50"] <= timing["p90"] and timing["runs"] == 30
    half = in_precision(model, "bf16")
    assert next(half.parameters()).dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.float32  # the fp32 model is left as it was
    assert in_precision(model, "fp32") is model
    assert precisions("cpu") == ("fp32",)


def test_gpu_runtimes_are_grouped_at_their_fastest_precision():
    assert runtime_group("torch-cuda-fp16-graph") == runtime_group("torch-cuda-bf16-graph") == "torch-cuda graph"
    assert runtime_group("torch-cuda-fp32") == "torch-cuda eager"
    assert runtime_group("ort-cpu") == "ort-cpu" and runtime_group("torch-cpu") == "torch-cpu"


def test_more_processes_than_gpus_is_one_line(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match=r"more processes on this machine than it has GPUs \(1\).*--nproc-per-node 1"):
        distributed.init()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without a GPU")
def test_bench_on_cuda_without_a_gpu_is_one_line(tiny_teacher):
    with pytest.raises(UserError, match="PyTorch sees no CUDA GPU"):
        bench(tiny_teacher[0], SHAPES, device="cuda")


@cuda
def test_bench_on_the_gpu_times_every_precision_eager_and_graph(tiny_teacher):
    teacher, _ = tiny_teacher
    bench(teacher, SHAPES, threads=1)  # the CPU too: the report shows both devices
    measured = bench(teacher, SHAPES, device="cuda")
    ((key, entry),) = [(k, e) for k, e in measured.benches.items() if k.endswith("| cuda")]
    assert key.endswith("| cuda") and torch.cuda.get_device_name() in key
    runtimes = set(entry["latency_ms"])
    for precision in precisions("cuda"):
        assert {f"torch-cuda-{precision}", f"torch-cuda-{precision}-graph"} <= runtimes
        assert abs(entry["accuracy_by_precision"][precision] - entry["dev"]["accuracy"]) <= 0.02
    for by_shape in entry["latency_ms"].values():
        assert all(0 < t["p50"] <= t["p90"] for t in by_shape.values())
    context = build(teacher.workspace)  # the GPU by name, at each runtime's fastest precision, beside the CPU
    gpu = f"GPU {torch.cuda.get_device_name()}"
    assert {k[1] for k in context["keys"] if context["device_of"](k[0]) == gpu} == {"torch-cuda eager",
                                                                                    "torch-cuda graph"}
    assert {k[1] for k in context["keys"] if context["device_of"](k[0]).startswith("CPU ")} == {"torch-cpu"}


@cuda
def test_hidden_state_distillation_runs_with_the_teacher_on_the_gpu(tiny_teacher):
    teacher, task = tiny_teacher
    student = distill(teacher, task, DistillConfig(layers=1, intermediate="hidden-cosine"), FAST, progress=False)
    assert student.record.metrics["dev"]["accuracy"] >= 0.8
    assert student.meta["train"]["device"] == "cuda"


def _torchrun(processes: int, tiny_base, csv, workspace):
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", "-m",
         "compress", "--workspace", str(workspace), "teacher", "--base", str(tiny_base), "--name", "tiny",
         "--task", str(csv), "--text-column", "sentence", "--epochs", "1", "--max-length", "32"],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=900)


@cuda
def test_torchrun_one_process_per_gpu_trains_and_one_more_is_refused(tiny_base, learnable_csv, tmp_path):
    gpus = torch.cuda.device_count()
    result = _torchrun(gpus, tiny_base, learnable_csv, tmp_path / "ws")
    assert result.returncode == 0, result.stderr[-3000:]
    assert Variant.load(tmp_path / "ws" / "teachers" / "tiny" / "reviews").meta["train"]["processes"] == gpus
    result = _torchrun(gpus + 1, tiny_base, learnable_csv, tmp_path / "ws-over")
    assert result.returncode != 0
    assert "more processes on this machine than it has GPUs" in result.stderr
    assert not (tmp_path / "ws-over" / "teachers").exists()


def test_a_trained_model_is_evaluated_in_fp32_not_under_the_training_autocast(tiny_base, learnable_csv, tmp_path):
    """accelerate wraps forward in bf16 autocast for training; the records' accuracy must not inherit it."""
    from compress.configs import TrainConfig
    from compress.data.batches import encode
    from compress.data.tasks import load_task
    from compress.model.checkpoint import load_tokenizer
    from compress.training.trainer import train_resumable

    task = load_task(str(learnable_csv), text_column="sentence")
    tokenizer = load_tokenizer(tiny_base)
    train, dev = (encode(split, tokenizer, 32) for split in (task.train, task.dev))
    from compress.model.checkpoint import load_classifier

    config = TrainConfig(epochs=0.2, batch_size=16, max_length=32, precision="bf16")
    trained = train_resumable(load_classifier(tiny_base, num_labels=2), tokenizer, train, dev, config,
                              tmp_path / "run", {"test": 1}, ("accuracy",), progress=False)
    assert "_original_forward" not in trained.model.__dict__
    assert next(trained.model.parameters()).dtype == torch.float32
