"""torchrun: two CPU processes (gloo, loopback) write the same variant a single process does.

The GPU side (one process per GPU, NCCL) is in test_gpu.py."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from compress.variant import Variant

TRAIN = ["--epochs", "2", "--lr", "1e-3", "--max-length", "32", "--precision", "fp32", "--seed", "5"]


def teacher_command(workspace, csv, processes: int, batch_size: int):
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
              if processes > 1 else [sys.executable])
    return [*launch, "-m", "compress", "--workspace", str(workspace), "teacher", "--base", str(TINY_BASE[0]),
            "--name", "tiny", "--task", str(csv), "--text-column", "sentence", *TRAIN, "--batch-size", str(batch_size)]


TINY_BASE = []


@pytest.fixture
def runs(tiny_base, learnable_csv, tmp_path):
    TINY_BASE[:] = [tiny_base]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # gloo on the CPU, GPU or not
    out = {}
    for processes, batch in ((1, 16), (2, 8)):  # the same effective batch
        workspace = tmp_path / f"ws{processes}"
        result = subprocess.run(teacher_command(workspace, learnable_csv, processes, batch), env=env,
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        out[processes] = (workspace, result)
    # then a student under torchrun, on the cached soft targets
    workspace = tmp_path / "ws2"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    result = subprocess.run([*launch, "-m", "compress", "--workspace", str(workspace), "distill", "--teacher", "tiny",
                             "--task", str(learnable_csv), "--text-column", "sentence", "--layers", "1", *TRAIN,
                             "--batch-size", "8"], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_two_processes_match_one_and_write_one_copy(runs):
    (single_ws, _), (ddp_ws, ddp) = runs[1], runs[2]
    single = Variant.load(single_ws / "teachers" / "tiny" / "reviews")
    double = Variant.load(ddp_ws / "teachers" / "tiny" / "reviews")
    assert ddp.stdout.count("teacher ") == 1  # rank 0 alone reports
    assert abs(single.meta["metrics"]["dev"]["accuracy"] - double.meta["metrics"]["dev"]["accuracy"]) <= 0.05
    assert double.meta["metrics"]["dev"]["accuracy"] >= 0.9
    # one copy of each artifact, no leftovers from the second process
    assert sorted(p.name for p in (ddp_ws / "teachers" / "tiny").iterdir()) == ["reviews"]
    files = sorted(p.name for p in (double.path / "soft_targets").iterdir())
    assert len(files) == 1 and not files[0].startswith(".")
    # soft targets gathered from both shards, in row order: they equal the saved teacher's logits
    from transformers import AutoTokenizer

    from compress.data.batches import encode
    from compress.data.tasks import task_of
    from compress.model.checkpoint import load_classifier
    from compress.runtime.inference import predict_logits

    tokenizer = AutoTokenizer.from_pretrained(double.path)
    train = encode(task_of(double.record).train, tokenizer, 32)
    expected = predict_logits(load_classifier(double.path), train, tokenizer)
    gathered = load_file(double.path / "soft_targets" / files[0])["logits"]
    torch.testing.assert_close(gathered, expected, atol=1e-4, rtol=0)
    meta = json.loads((double.path / "variant.json").read_text())
    assert meta["params"]["batch_size"] == 8 and meta["train"]["processes"] == 2
    assert meta["train"]["effective_batch_size"] == single.meta["train"]["effective_batch_size"] == 16
    student = Variant.load(ddp_ws / "students" / "tiny" / "reviews" / "L1-kd")
    assert student.meta["train"]["processes"] == 2 and student.meta["metrics"]["dev"]["accuracy"] >= 0.9
    assert sorted(p.name for p in student.path.parent.iterdir()) == ["L1-kd"]
