"""Every stage on a tiny ModernBERT teacher, run as a user runs them: the family's pieces (removal
equals masking, reloads, loss taps, export parity) are tested with the other families; this is the
chain on a trained model with ModernBERT's tokenizer inputs (no token_type_ids)."""

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, ModernBertConfig

from compress.configs import DistillConfig, LayerDropConfig, PruneConfig, ShareConfig, TrainConfig
from compress.data.batches import encode
from compress.data.tasks import load_task
from compress.model.checkpoint import load_classifier, load_config
from compress.model.registry import resolve_base
from compress.model.structure import MODELING_FILE
from compress.runtime.export import export
from compress.runtime.inference import predict_logits
from compress.stages.distill import distill
from compress.stages.layerdrop import layerdrop
from compress.stages.prune import prune
from compress.stages.quantize import quantize
from compress.stages.share import share
from compress.stages.teacher import fine_tune

from conftest import FAST, write_learnable_csv

ONE_EPOCH = TrainConfig(**{**FAST.as_dict(), "epochs": 1})


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A 4-layer ModernBERT (global attention in layers 0 and 3, an 8-token window in 1 and 2),
    fine-tuned on the learnable task."""
    folder = tmp_path_factory.mktemp("tiny-modernbert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_base("minilm-l6"),
                                              model_input_names=["input_ids", "attention_mask"])
    torch.manual_seed(0)
    config = ModernBertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=64, intermediate_size=128, num_attention_heads=4,
        num_hidden_layers=4, max_position_embeddings=128, local_attention=8, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id, cls_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id, sep_token_id=tokenizer.sep_token_id)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    task = load_task(str(write_learnable_csv(folder / "reviews.csv", 600)), text_column="sentence")
    return fine_tune(str(folder), task, folder / "ws", FAST, name="tiny-modernbert", progress=False), task


def reloads_without_compress(variant, task) -> None:
    """The shipped modeling file rebuilds the variant with the logits compress's loader gives."""
    tokenizer = AutoTokenizer.from_pretrained(variant.path)
    dev = encode(task.dev.select(range(16)), tokenizer, FAST.max_length)
    remote = AutoModelForSequenceClassification.from_pretrained(variant.path, trust_remote_code=True)
    torch.testing.assert_close(predict_logits(remote, dev, tokenizer),
                               predict_logits(load_classifier(variant.path), dev, tokenizer), atol=1e-5, rtol=0)


def test_every_stage_runs_on_a_modernbert_teacher(teacher):
    teacher, task = teacher
    assert teacher.meta["metrics"]["dev"]["accuracy"] > 0.8  # it learned the task

    student = distill(teacher, task, DistillConfig(layers=2, init="1,3", intermediate="hidden,attention"), ONE_EPOCH,
                      name="L2", progress=False)
    config = load_config(student.path)
    assert config.layer_types == ["sliding_attention", "full_attention"]
    assert config.compress_attention_norms == [0, 1] and (student.path / MODELING_FILE).is_file()
    reloads_without_compress(student, task)

    pruned = prune(teacher, PruneConfig(heads=0.5, neurons=0.5, layers="0,", importance="taylor"), ONE_EPOCH,
                   name="pruned", progress=False)
    assert pruned.meta["structure"]["removed"]["layers"] == [0]
    kept = pruned.meta["structure"]
    assert sum(kept["heads_per_layer"]) == 6 and sum(kept["neurons_per_layer"]) == 192
    assert load_config(pruned.path).layer_types == ["sliding_attention", "sliding_attention", "full_attention"]
    reloads_without_compress(pruned, task)

    full, cut = layerdrop(teacher, LayerDropConfig(rate=0.5, keep="1,3"), ONE_EPOCH, baseline=False, progress=False)
    assert load_config(cut.path).layer_types == ["sliding_attention", "full_attention"]
    reloads_without_compress(cut, task)

    shared = share(teacher, ShareConfig(groups=1, what="all"), TrainConfig(epochs=0), name="shared", progress=False)
    assert shared.meta["unique_parameters"] < shared.meta["parameters"]
    reloads_without_compress(shared, task)

    record = export(pruned).export
    assert record["inputs"] == ["input_ids", "attention_mask"] and record["parity"]["max_abs_diff"] <= 1e-4
    int8 = quantize(pruned)
    assert int8.meta["size_mb"] < 0.5 * record["size_mb"]
