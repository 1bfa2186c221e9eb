import copy
import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from compress.configs import PruneConfig, TrainConfig
from compress.data.batches import encode
from compress.errors import UserError
from compress.model.checkpoint import load_classifier
from compress.model.removal import remove, trace
from compress.model.structure import MODELING_FILE, STRUCTURE_KEY, record
from compress.runtime.inference import predict_logits
from compress.stages.prune import apply_pruning, choose, current_structure, gates, prune, scoring_batches
from compress.variant import Variant, save_variant

from conftest import CONFIGS, FAST, TINY, student_meta

HEADS, WIDTH, HIDDEN = TINY["num_attention_heads"], TINY["intermediate_size"], TINY["hidden_size"]
HEAD_SIZE = HIDDEN // HEADS
# Per layer: heads and FFN neurons to remove. Layer 1 loses every head, layer 3 every neuron.
DROP_HEADS = {0: [1, 3], 1: [0, 1, 2, 3], 2: [2], 3: [], 4: [0], 5: [1, 2, 3]}
DROP_NEURONS = {0: list(range(10)), 1: [], 2: list(range(0, 64, 2)), 3: list(range(64)), 4: [5], 5: [1, 60]}


def tiny(arch: str):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(copy.deepcopy(CONFIGS[arch]), attn_implementation="eager").eval()


def inputs():
    ids = torch.randint(5, 120, (3, 11), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def prune_physically(model) -> dict:
    """Remove DROP_HEADS and DROP_NEURONS through torch-pruning's graph, as the prune stage does."""
    structure = current_structure(model)
    record(model, STRUCTURE_KEY, structure)
    heads = [[h for h in range(HEADS) if h not in DROP_HEADS[i]] for i in range(len(DROP_HEADS))]
    neurons = [[n for n in range(WIDTH) if n not in DROP_NEURONS[i]] for i in range(len(DROP_NEURONS))]
    remove(model, trace(model, inputs()), structure, heads, neurons)
    return structure


@pytest.mark.parametrize("arch", CONFIGS)
def test_removing_heads_and_neurons_equals_masking_them(arch):
    model = tiny(arch)
    with torch.no_grad():
        full = model(**inputs()).logits
        with gates(model, current_structure(model)) as (head_gates, neuron_gates):
            for layer, heads in DROP_HEADS.items():
                head_gates[layer][heads] = 0
            for layer, neurons in DROP_NEURONS.items():
                neuron_gates[layer][neurons] = 0
            masked = model(**inputs()).logits
        prune_physically(model)
        pruned = model(**inputs()).logits
    assert (masked - full).abs().max() > 1e-3  # the masks changed the model
    torch.testing.assert_close(pruned, masked, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", CONFIGS)
def test_a_pruned_model_trains_after_an_evaluation_in_inference_mode(arch):
    """As the prune stage does: evaluate (inference mode) before the KD recovery trains it."""
    model = tiny(arch)
    prune_physically(model)
    with torch.inference_mode():
        model(**inputs())
    model.train()
    model(**inputs(), labels=torch.tensor([0, 1, 0])).loss.backward()
    assert all(p.grad is not None for p in model.get_submodule(current_structure(model)["layers"])[0].parameters())


@pytest.mark.parametrize("arch", CONFIGS)
def test_parameter_count_follows_the_formula(arch):
    model = tiny(arch)
    before = sum(p.numel() for p in model.parameters())
    prune_physically(model)
    heads_gone = sum(map(len, DROP_HEADS.values()))
    neurons_gone = sum(map(len, DROP_NEURONS.values()))
    # a head: its query, key and value rows (weights and biases) and its columns of the output projection;
    # a neuron: its FFN input row and bias (two rows, input and gate, in ModernBERT's GLU), and its FFN
    # output column. ModernBERT has no biases.
    bias, rows = (0, 2) if arch == "modernbert" else (1, 1)
    per_head = 3 * (HIDDEN * HEAD_SIZE + bias * HEAD_SIZE) + HIDDEN * HEAD_SIZE
    per_neuron = rows * (HIDDEN + bias) + HIDDEN
    assert sum(p.numel() for p in model.parameters()) == before - heads_gone * per_head - neurons_gone * per_neuron


@pytest.mark.parametrize("arch", CONFIGS)
def test_pruned_checkpoint_reloads_both_ways_with_the_same_logits(arch, tmp_path, tiny_base):
    model = tiny(arch)
    prune_physically(model)
    with torch.no_grad():
        expected = model(**inputs()).logits
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    save_variant(tmp_path / "pruned", model, tokenizer, student_meta(None, "pruned"))
    assert (tmp_path / "pruned" / MODELING_FILE).is_file()
    own = load_classifier(tmp_path / "pruned", attn_implementation="eager").eval()
    remote = AutoModelForSequenceClassification.from_pretrained(
        tmp_path / "pruned", trust_remote_code=True, attn_implementation="eager").eval()
    assert type(remote).__module__.endswith(MODELING_FILE[:-3])  # the copied file built it, not compress
    with torch.no_grad():
        torch.testing.assert_close(own(**inputs()).logits, expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(remote(**inputs()).logits, expected, atol=1e-6, rtol=0)
    meta = json.loads((tmp_path / "pruned" / "variant.json").read_text())
    assert meta["parameters"] == sum(p.numel() for p in model.parameters())


def test_modernbert_pruned_of_its_first_layer_reloads_both_ways(tmp_path, tiny_base):
    """Layers 0 and 4 go, then half the heads and neurons: the recorded shapes, the attention types and
    the attention norms (transformers builds only the first layer without one) all follow the cut."""
    model = tiny("modernbert")
    with torch.no_grad():  # as trained: an initial norm (weight 1) after the embeddings' norm changes almost nothing
        for layer in model.model.layers[1:]:
            layer.attn_norm.weight.uniform_(0.5, 1.5)
    batch = {**inputs(), "labels": torch.tensor([0, 1, 1])}
    removed = apply_pruning(model, current_structure(model), PruneConfig(heads=0.5, neurons=0.5, layers="0,4"),
                            [batch], seed=0)
    assert removed == {"layers": [0, 4], "heads": 8, "neurons": 128}
    assert model.config.layer_types == ["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"]
    with torch.no_grad():
        expected = model(**inputs()).logits
    saved = save_variant(tmp_path / "pruned", model, AutoTokenizer.from_pretrained(tiny_base),
                         student_meta(None, "pruned"))
    for reloaded in (load_classifier(saved.path, attn_implementation="eager"),
                     AutoModelForSequenceClassification.from_pretrained(saved.path, trust_remote_code=True,
                                                                        attn_implementation="eager")):
        assert all(isinstance(layer.attn_norm, torch.nn.LayerNorm) for layer in reloaded.model.layers)
        with torch.no_grad():
            torch.testing.assert_close(reloaded.eval()(**inputs()).logits, expected, atol=1e-6, rtol=0)
    assert saved.meta["parameters"] == sum(p.numel() for p in model.parameters())


def test_a_mismatched_pruned_checkpoint_is_refused_not_reinitialised(tmp_path, tiny_base):
    model = tiny("bert")
    prune_physically(model)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["compress_structure"]["neurons"][0] += 1  # claims a shape the weights do not have
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="cannot load a model"):
        load_classifier(tmp_path)


def test_choose_global_and_per_layer():
    scores = [torch.tensor([4.0, 1.0, 3.0, 2.0]), torch.tensor([0.1, 0.2, 0.3, 2.0])]
    assert choose(scores, 0.5, "per-layer") == [[0, 2], [2, 3]]
    assert choose(scores, 0.0, "global") == [[0, 1, 2, 3], [0, 1, 2, 3]]
    # normalised per layer (L2), the second layer's 0.1 and 0.2 are the lowest overall
    assert choose(scores, 0.25, "global") == [[0, 1, 2, 3], [2, 3]]


def kl_to(reference: torch.Tensor, logits: torch.Tensor) -> float:
    return float(F.kl_div(F.log_softmax(logits, -1), F.log_softmax(reference, -1), log_target=True, reduction="batchmean"))


def test_taylor_scores_beat_random_on_a_trained_model(tiny_teacher):
    teacher, task = tiny_teacher
    tokenizer = AutoTokenizer.from_pretrained(teacher.path)
    dev = encode(task.dev, tokenizer, FAST.max_length)
    reference = predict_logits(load_classifier(teacher.path), dev, tokenizer)
    batches = scoring_batches(task, tokenizer, FAST.max_length, 256, seed=0)

    def damage(importance: str, seed: int = 0) -> float:
        model = load_classifier(teacher.path)
        apply_pruning(model, current_structure(model), PruneConfig(heads=0.5, neurons=0.5, importance=importance),
                      batches, seed)
        return kl_to(reference, predict_logits(model, dev, tokenizer))

    taylor = damage("taylor")
    randoms = sorted(damage("random", seed) for seed in range(3))
    assert taylor < randoms[1], (taylor, randoms)  # better than the median random choice


def test_prune_stage_removes_recovers_and_records(tiny_teacher, tmp_path):
    teacher, task = tiny_teacher
    student = Variant.load(teacher.path)  # prune the teacher itself: a 2-layer BERT
    config = TrainConfig(**{**FAST.as_dict(), "epochs": 0.5})  # recovery may be a fraction of an epoch
    pruned = prune(student, PruneConfig(heads=0.5, neurons=0.5, layers="1,", importance="taylor"), config,
                   name="pruned", progress=False)
    meta = pruned.meta
    assert pruned.path.parent.name == task.name and (pruned.path / MODELING_FILE).is_file()
    assert meta["structure"]["removed"]["layers"] == [1]
    assert meta["structure"]["heads_per_layer"] == [2] and meta["structure"]["neurons_per_layer"] == [64]
    assert meta["metrics"]["dev"]["accuracy"] >= meta["metrics"]["dev_before_training"]["accuracy"]
    assert [h["epoch"] for h in meta["metrics"]["history"]] == [0.5]
    assert meta["parameters"] < teacher.meta["parameters"]
    reloaded = load_classifier(pruned.path)
    assert reloaded.config.num_hidden_layers == 1


@pytest.mark.parametrize("settings, message", [
    ({"heads": 1.0}, "outside \\[0, 1\\)"),
    ({"neurons": -0.1}, "outside \\[0, 1\\)"),
    ({"layers": "5,"}, "name layers from 0 to 1"),
    ({"layers": "0,0"}, "--layers 0,0 names a layer twice"),
    ({"layers": "0,1"}, "removes every layer"),
    ({"layers": "2"}, "remove 1 to 1"),
    ({"layers": "x"}, "a count N or layer ids"),
    ({}, "nothing to prune"),
])
def test_bad_pruning_requests_are_clear_errors(tiny_teacher, settings, message):
    teacher, _ = tiny_teacher
    with pytest.raises(UserError, match=message):
        prune(teacher, PruneConfig(**settings), FAST, name="never", progress=False)
    assert not (teacher.path.parents[2] / "students" / "tiny" / teacher.meta["task"] / "never").exists()


def test_prune_command(run_cli, tiny_teacher, tmp_path):
    teacher, task = tiny_teacher
    copy = shutil.copytree(teacher.path, tmp_path / "ws" / "teachers" / "tiny" / task.name)
    code, out, err = run_cli("prune", copy, "--heads", "0.25", "--neurons", "0.5", "--importance", "magnitude",
                             "--recover-epochs", "0")
    assert code == 0, err
    target = tmp_path / "ws" / "students" / "tiny" / task.name / "tiny-prune-h25n50-magnitude"
    assert f"pruned {target}" in out and "before training" in out
    assert Variant.load(target).meta["structure"]["removed"] == {"layers": [], "heads": 2, "neurons": 128}
    code, _, err = run_cli("prune", copy, "--layers", "7,")
    assert code == 2 and err.strip() == "compress: error: --layers 7,: name layers from 0 to 1"


def test_the_cubic_schedule():
    from compress.stages.prune import cubic

    assert [round(cubic(0.5, t, 3), 4) for t in range(4)] == [0.0, 0.3519, 0.4815, 0.5]
    assert cubic(0.4, 1, 1) == 0.4


def test_gradual_pruning_in_one_step_is_the_one_shot_cut(tiny_teacher):
    """--steps 1 keeps the same heads and neurons, and the same weights after recovery, as one plain cut."""
    from compress.training.recovery import shrink

    teacher, _ = tiny_teacher
    config = PruneConfig(heads=0.5, neurons=0.5, steps=1)
    recovery = TrainConfig(**{**FAST.as_dict(), "epochs": 0.5})
    gradual = prune(teacher, config, recovery, name="gradual", progress=False)

    def one_cut(model, task, tokenizer, train):
        batches = scoring_batches(task, tokenizer, train.max_length, config.score_examples, train.seed)
        return {"structure": {"removed": apply_pruning(model, current_structure(model), config, batches, train.seed)}}

    one_shot = shrink(teacher, "prune", "one-shot", one_cut, config, config.as_dict(), recovery, progress=False)
    assert gradual.meta["structure"]["removed"] == one_shot.meta["structure"]["removed"]
    assert "rounds" not in gradual.meta
    kept = [getattr(load_classifier(v.path).config, STRUCTURE_KEY) for v in (gradual, one_shot)]
    assert kept[0]["heads"] == kept[1]["heads"] and kept[0]["neurons"] == kept[1]["neurons"]
    weights = [load_classifier(v.path).state_dict() for v in (gradual, one_shot)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_gradual_pruning_follows_the_cubic_schedule_and_records_each_round(tiny_teacher):
    from compress.stages.prune import cubic

    teacher, _ = tiny_teacher  # 2 layers: 8 heads, 256 FFN neurons
    recovery = TrainConfig(**{**FAST.as_dict(), "epochs": 0.6})
    pruned = prune(teacher, PruneConfig(heads=0.5, neurons=0.5, steps=3), recovery, progress=False)
    assert pruned.path.name == "tiny-prune-h50n50-taylor-s3"
    rounds = pruned.meta["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    for t, entry in enumerate(rounds, start=1):
        structure = entry["structure"]
        assert 8 - sum(structure["heads_per_layer"]) == round(cubic(0.5, t, 3) * 8) == [3, 4, 4][t - 1]
        assert 256 - sum(structure["neurons_per_layer"]) == round(cubic(0.5, t, 3) * 256) == [90, 123, 128][t - 1]
        assert entry["schedule"] == {"heads": cubic(0.5, t, 3), "neurons": cubic(0.5, t, 3)}
        assert "accuracy" in entry["dev_before_recovery"]
    assert all("accuracy" in r["dev_after_recovery"] for r in rounds[:2]) and "dev_after_recovery" not in rounds[2]
    assert pruned.meta["structure"] == rounds[2]["structure"]
    assert [h["epoch"] for h in pruned.meta["metrics"]["history"]] == [pytest.approx(0.2, abs=0.05)]  # 0.6 / 3
    assert pruned.meta["params"]["epochs"] == 0.6 and pruned.meta["params"]["steps"] == 3
    from compress.workspace import partial_dir

    assert not partial_dir(pruned.path).exists()
