import copy
import shutil

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from compress.configs import ShareConfig, TrainConfig
from compress.errors import UserError
from compress.model.arch import encoder_layers
from compress.model.checkpoint import load_classifier
from compress.model.structure import SHARING_KEY, is_shared
from compress.runtime.export import export
from compress.stages.quantize import quantize
from compress.stages.share import layer_groups, share, share_layers
from compress.variant import Variant, save_variant, unique_parameters

from conftest import CONFIGS, FAST, student_meta


def tiny(arch: str):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(copy.deepcopy(CONFIGS[arch]), attn_implementation="eager").eval()


def layer_parameters(model) -> int:
    sharing = getattr(model.config, SHARING_KEY)
    return sum(p.numel() for n, p in encoder_layers(model)[0].named_parameters() if is_shared(n, sharing))


def test_groups_split_consecutive_layers_earlier_groups_larger():
    assert layer_groups(6, 2) == [[0, 1, 2], [3, 4, 5]]
    assert layer_groups(6, 4) == [[0, 1], [2, 3], [4], [5]]
    assert layer_groups(6, 1) == [[0, 1, 2, 3, 4, 5]]
    with pytest.raises(UserError, match="--groups 7 is impossible for 6 layers"):
        layer_groups(6, 7)
    with pytest.raises(UserError, match="--groups 0"):
        layer_groups(6, 0)


@pytest.mark.parametrize("arch", CONFIGS)
@pytest.mark.parametrize("what", ["all", "attention", "ffn"])
def test_shared_parameters_are_one_storage_and_the_unique_count_follows_the_formula(arch, what):
    model = tiny(arch)
    total = sum(p.numel() for p in model.parameters())
    share_layers(model, ShareConfig(groups=2, what=what))
    layers = encoder_layers(model)
    sharing = getattr(model.config, SHARING_KEY)
    for name, param in layers[0].named_parameters():
        same = param is layers[1].get_parameter(name) and param is layers[2].get_parameter(name)
        assert same == is_shared(name, sharing), name
        assert param is not layers[3].get_parameter(name)  # another group
    per_layer = layer_parameters(model)
    assert per_layer > 0
    assert unique_parameters(model) == total - 2 * (3 - 1) * per_layer  # 2 groups of 3 layers


def test_mean_init_starts_from_the_group_mean():
    model = tiny("bert")
    weights = [layer.attention.self.query.weight.detach().clone() for layer in encoder_layers(model)]
    share_layers(model, ShareConfig(groups=1, what="attention", init="mean"))
    torch.testing.assert_close(encoder_layers(model)[4].attention.self.query.weight, torch.stack(weights).mean(0))


@pytest.mark.parametrize("arch", CONFIGS)
def test_reload_keeps_the_ties(arch, tmp_path, tiny_base):
    model = tiny(arch)
    share_layers(model, ShareConfig(groups=3, what="attention"))
    ids = torch.randint(5, 120, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    saved = save_variant(tmp_path / "shared", model, AutoTokenizer.from_pretrained(tiny_base), student_meta(None, "shared"))
    assert saved.meta["unique_parameters"] < saved.meta["parameters"]
    for reloaded in (load_classifier(saved.path, attn_implementation="eager"),
                     AutoModelForSequenceClassification.from_pretrained(saved.path, trust_remote_code=True,
                                                                        attn_implementation="eager")):
        reloaded.eval()
        with torch.no_grad():
            torch.testing.assert_close(reloaded(input_ids=ids).logits, expected, atol=1e-6, rtol=0)
            first, second = encoder_layers(reloaded)[0], encoder_layers(reloaded)[1]
            name = next(n for n, _ in first.named_parameters() if is_shared(n, getattr(reloaded.config, SHARING_KEY)))
            first.get_parameter(name).add_(1.0)  # a change to the shared tensor reaches every layer of the group
            assert torch.equal(first.get_parameter(name), second.get_parameter(name))
            assert not torch.equal(first.get_parameter(name), encoder_layers(reloaded)[2].get_parameter(name))


def test_bad_sharing_requests_are_clear_errors():
    model = tiny("bert")
    share_layers(model, ShareConfig(groups=2))
    with pytest.raises(UserError, match="already shared"):
        share_layers(model, ShareConfig(groups=1))
    with pytest.raises(UserError, match="--what must be one of"):
        share_layers(tiny("bert"), ShareConfig(groups=1, what="heads"))


def test_share_stage_recovers_and_exports_one_initializer_per_tied_tensor(tiny_teacher, tmp_path):
    teacher, task = tiny_teacher
    copy = Variant.load(shutil.copytree(teacher.path, tmp_path / "ws" / "teachers" / "tiny" / task.name))
    plain = export(copy)
    shared = share(copy, ShareConfig(groups=1, what="all"), TrainConfig(**{**FAST.as_dict(), "epochs": 1}),
                   name="shared", progress=False)
    meta = shared.meta
    assert meta["sharing"]["groups"] == [[0, 1]] and "dev_before_training" in meta["metrics"]
    assert meta["unique_parameters"] < meta["parameters"] == copy.meta["parameters"]
    exported = export(shared).export
    assert exported["parity"]["max_abs_diff"] <= 1e-4
    # the file shrinks by one layer's weights (2 layers -> 1 unique), whichever graph was kept
    layer_mb = (copy.meta["parameters"] - meta["unique_parameters"]) * 4 / 1e6
    assert exported["size_mb"] == pytest.approx(plain.export["size_mb"] - layer_mb, abs=0.05)
    int8 = quantize(shared)
    assert int8.meta["size_mb"] < 0.3 * exported["size_mb"]


def test_share_command(run_cli, tiny_teacher, tmp_path):
    teacher, task = tiny_teacher
    copy_ = shutil.copytree(teacher.path, tmp_path / "ws" / "teachers" / "tiny" / task.name)
    code, out, err = run_cli("share", copy_, "--groups", "1", "--what", "attention", "--recover-epochs", "0")
    assert code == 0, err
    assert "tiny-share-g1-attention" in out and "unique of" in out
    code, _, err = run_cli("share", copy_, "--groups", "3")
    assert code == 2 and err.strip() == "compress: error: --groups 3 is impossible for 2 layers (choose 1 to 2)"
