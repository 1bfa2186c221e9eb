import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, Trainer

from compress.configs import TrainConfig
from compress.data.batches import encode
from compress.data.tasks import load_task
from compress.errors import UserError
from compress.machine import device
from compress.model.checkpoint import load_classifier
from compress.runtime.inference import predict_logits
from compress.stages import teacher as stage
from compress.training import targets
from compress.variant import Variant
from compress.workspace import partial_dir

from conftest import FAST


@pytest.fixture(scope="module")
def trained(trained_teacher):
    """The session's teacher, read only; tests that write take their own copy (tiny_teacher)."""
    return trained_teacher


def test_fine_tuning_beats_chance_and_keeps_the_best_epoch(trained):
    variant, task = trained
    meta = variant.meta
    assert meta["metrics"]["dev"]["accuracy"] >= 0.9  # chance is about 0.5
    history = meta["metrics"]["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert meta["metrics"]["best_epoch"] == max(history, key=lambda h: h["accuracy"])["epoch"]
    assert meta["data"]["fingerprint"] == task.fingerprint
    assert meta["params"]["seed"] == 7 and meta["train"]["device"] == device()  # wherever it ran
    assert 0 < meta["train"]["step_examples_per_s"] and 0 < meta["train"]["examples_per_s"]
    assert {"torch", "transformers"} <= set(meta["machine"]["versions"])
    assert not partial_dir(variant.path).exists()  # checkpoints removed once done
    assert [p.name for p in variant.path.parent.iterdir()] == ["reviews"]  # no temporary folders


def test_saved_checkpoint_is_the_best_epoch(trained):
    variant, task = trained
    tokenizer = AutoTokenizer.from_pretrained(variant.path)
    model = load_classifier(variant.path)
    logits = predict_logits(model, encode(task.dev, tokenizer, FAST.max_length), tokenizer)
    accuracy = float((logits.argmax(-1).numpy() == np.asarray(task.dev["label"])).mean())
    best = max(h["accuracy"] for h in variant.meta["metrics"]["history"])
    assert accuracy == pytest.approx(best, abs=1e-9)
    assert variant.meta["metrics"]["dev"]["accuracy"] == pytest.approx(accuracy, abs=1e-9)


def test_soft_targets_are_the_teachers_logits(trained):
    variant, task = trained
    (file,) = (variant.path / "soft_targets").iterdir()
    assert file == targets.soft_targets_file(variant, task, FAST.max_length)
    cached = load_file(file)["logits"]
    assert cached.shape == (len(task.train), 2)
    tokenizer = AutoTokenizer.from_pretrained(variant.path)
    model = load_classifier(variant.path)
    recomputed = torch.cat([  # one example at a time: no batching or padding in common with the cache
        model(**tokenizer(row["text"], truncation=True, max_length=FAST.max_length, return_tensors="pt")).logits
        for row in task.train.select(range(40))
    ]).detach()
    torch.testing.assert_close(cached[:40], recomputed, atol=1e-4, rtol=1e-4)


def test_soft_targets_are_recomputed_for_another_max_length(tiny_teacher):
    variant, task = tiny_teacher
    logits = targets.soft_targets(variant, task, max_length=16)
    assert targets.soft_targets_file(variant, task, 16).is_file()
    assert torch.equal(targets.soft_targets(variant, task, max_length=16), logits)  # now read from cache
    assert len(list((variant.path / "soft_targets").iterdir())) == 2


def test_a_run_stopped_mid_epoch_resumes_to_the_same_result(tiny_base, learnable_csv, tmp_path, monkeypatch):
    task = load_task(str(learnable_csv), text_column="sentence")
    config = TrainConfig(epochs=2, lr=1e-3, batch_size=16, max_length=32, seed=3, precision="fp32")
    straight = stage.fine_tune(str(tiny_base), task, tmp_path / "a", config, name="t", progress=False)

    steps_per_epoch = -(-len(task.train) // config.batch_size)
    real_step = Trainer.training_step

    def crash_in_second_epoch(self, *args, **kwargs):
        if self.state.global_step == steps_per_epoch + 5:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        stage.fine_tune(str(tiny_base), task, tmp_path / "b", config, name="t", progress=False)
    partial = partial_dir(tmp_path / "b" / "teachers" / "t" / "reviews")
    assert [p.name for p in (partial / "checkpoints").iterdir()] == [f"checkpoint-{steps_per_epoch}"]
    assert not (tmp_path / "b" / "teachers" / "t" / "reviews").exists()

    monkeypatch.setattr(Trainer, "training_step", real_step)
    resumed = stage.fine_tune(str(tiny_base), task, tmp_path / "b", config, name="t", progress=False)
    assert resumed.meta["metrics"]["history"] == straight.meta["metrics"]["history"]
    a, b = load_file(straight.path / "model.safetensors"), load_file(resumed.path / "model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)


def test_max_length_beyond_the_model_is_refused_before_anything_is_written(tiny_base, learnable_csv, tmp_path):
    task = load_task(str(learnable_csv), text_column="sentence")
    with pytest.raises(UserError, match=r"--max-length 512 is outside what this model takes \(8 to 128\)"):
        stage.fine_tune(str(tiny_base), task, tmp_path / "ws", TrainConfig(max_length=512), name="t")
    assert not (tmp_path / "ws").exists()


def test_corrupt_checkpoint_is_a_clear_error(tiny_base, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((tiny_base / name).read_bytes())
    (broken / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(UserError, match="cannot load a model from"):
        load_classifier(broken)


def test_variant_json_is_valid_and_loadable(trained):
    variant, _ = trained
    again = Variant.load(variant.path)
    assert again.meta == json.loads((variant.path / "variant.json").read_text())
    assert again.meta["stage"] == "teacher" and again.meta["parent"] is None
