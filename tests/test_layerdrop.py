import copy
import shutil

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from compress.configs import LayerDropConfig, TrainConfig
from compress.data.batches import encode
from compress.errors import UserError
from compress.model.arch import encoder_layers, keep_layers
from compress.model.checkpoint import load_classifier, load_tokenizer
from compress.runtime.inference import evaluate
from compress.stages.layerdrop import kept_layers, layer_drop, layerdrop
from compress.variant import Variant, parent_path

from conftest import CONFIGS, FAST


def tiny(arch: str):
    """Without dropout, so that train mode differs from eval mode only by LayerDrop."""
    torch.manual_seed(0)
    config = copy.deepcopy(CONFIGS[arch])
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout",
                 "seq_classif_dropout"):
        if hasattr(config, name):
            setattr(config, name, 0.0)
    return AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")


IDS = torch.randint(5, 120, (2, 9), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("arch", CONFIGS)
def test_rate_zero_is_the_plain_model_and_a_seeded_rate_drops_the_expected_layers(arch):
    model = tiny(arch).train()
    with torch.no_grad():
        plain = model(input_ids=IDS).logits
        with layer_drop(model, 0.0, seed=1) as schedule:
            torch.testing.assert_close(model(input_ids=IDS).logits, plain, atol=0, rtol=0)
        assert schedule.log == []
        with layer_drop(model, 0.5, seed=1) as schedule:
            dropped = model(input_ids=IDS).logits
        expected = (torch.rand(6, generator=torch.Generator().manual_seed(1)) < 0.5).nonzero().flatten().tolist()
        assert schedule.log == [expected] and 0 < len(expected) < 6
        shallower = copy.deepcopy(model)
        keep_layers(shallower, [i for i in range(6) if i not in expected])
        torch.testing.assert_close(dropped, shallower(input_ids=IDS).logits, atol=1e-6, rtol=0)
    assert all("forward" not in vars(layer) for layer in encoder_layers(model))  # unwrapped on exit


def test_eval_mode_runs_every_layer_deterministically():
    model = tiny("bert").eval()
    with torch.no_grad():
        plain = model(input_ids=IDS).logits
        with layer_drop(model, 0.9, seed=0) as schedule:
            for _ in range(3):
                torch.testing.assert_close(model(input_ids=IDS).logits, plain, atol=0, rtol=0)
    assert schedule.log == []


def test_kept_layers():
    assert kept_layers(6, "every-other") == [0, 2, 4]
    assert kept_layers(6, "3") == [0, 2, 5]
    assert kept_layers(6, "1,3,5") == [1, 3, 5]
    for keep, message in (("0,6", "name layers from 0 to 5"), ("6", "keeps all 6 layers"), ("odd", "--keep must be"),
                          ("7", "--keep 7 is impossible: the variant has 6 layers"), ("0", "--keep 0 is impossible")):
        with pytest.raises(UserError, match=message):
            kept_layers(6, keep)


def test_layerdrop_stage_makes_the_cut_model_and_its_baseline(tiny_teacher, tmp_path):
    teacher, task = tiny_teacher
    copy_ = Variant.load(shutil.copytree(teacher.path, tmp_path / "ws" / "teachers" / "tiny" / task.name))
    config = TrainConfig(**{**FAST.as_dict(), "epochs": 1})
    full, cut, baseline = layerdrop(copy_, LayerDropConfig(rate=0.5, keep="1,"), config, progress=False)
    assert [v.path.name for v in (full, cut, baseline)] == ["tiny-ld50-full", "tiny-ld50-keep-1", "tiny-ld50-keep-1-baseline"]
    assert full.meta["stage"] == "layerdrop" and parent_path(cut) == full.path
    assert cut.meta["params"]["kept_layers"] == [1] and "train" not in cut.meta  # cut, not retrained
    assert baseline.meta["params"]["rate"] == 0.0 and baseline.meta["train"]["train_runtime_s"] > 0
    tokenizer = load_tokenizer(teacher.path)
    dev = encode(task.dev, tokenizer, config.max_length)
    for variant in (cut, baseline):  # the saved model is the one measured: one layer, and its accuracy
        assert variant.meta["parameters"] < full.meta["parameters"]
        model = load_classifier(variant.path)
        assert model.config.num_hidden_layers == 1
        metrics, _ = evaluate(model, dev, tokenizer, task.metrics)
        assert variant.meta["metrics"]["dev"]["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-9)
    with pytest.raises(UserError, match="--rate 1.0 is outside"):
        layerdrop(copy_, LayerDropConfig(rate=1.0), config, progress=False)


def test_layerdrop_with_intermediate_losses_maps_the_full_model_and_the_cut_by_their_own_depths(tiny_teacher, tmp_path):
    """--layer-map names the full model's layers; the recovered cut (fewer layers) learns by the layers' origins."""
    teacher, task = tiny_teacher
    copy_ = Variant.load(shutil.copytree(teacher.path, tmp_path / "ws" / "teachers" / "tiny" / task.name))
    config = TrainConfig(**{**FAST.as_dict(), "epochs": 1})
    full, cut, baseline = layerdrop(copy_, LayerDropConfig(rate=0.5, keep="1,", intermediate="hidden,attention",
                                                           layer_map="1,1"), config, progress=False)
    assert full.meta["layer_map"] == [1, 1]
    assert "layer_map" not in cut.meta  # cut, not trained
    assert baseline.meta["layer_map"] == [1]  # the kept layer is the teacher's layer 1
