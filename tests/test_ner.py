"""Token classification (NER), the third task kind: CoNLL/JSONL data, word-to-subword alignment for each
tokenizer family, the entity metric, per-token KD, and a tagger through every stage on the tiny model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from compress.api import (  # the API a notebook uses: the stages themselves
    DistillConfig,
    LayerDropConfig,
    PruneConfig,
    QuantizeConfig,
    ShareConfig,
    TrainConfig,
    bench,
    distill,
    export,
    fine_tune,
    layerdrop,
    load_task,
    prune,
    quantize,
    share,
)
from compress.data.batches import NO_TAG, encode, label_array
from compress.data.tasks import labelled_file
from compress.errors import UserError
from compress.kinds import KINDS, TokenClassification, entities, entity_scores
from compress.stages.report import build
from compress.variant import Variant

from conftest import TOKENIZER_FAMILIES, recipe_and_search, tokenizer_of

WNUT = Path(__file__).resolve().parents[2] / "shared" / "data"
FAST = TrainConfig(epochs=3, lr=1e-3, batch_size=16, max_length=32, seed=7, precision="fp32")
FILLER = ["the", "a", "film", "story", "was", "is", "and", "of", "with", "this", "that", "it", "we", "saw", "in"]
PEOPLE = ["john", "mary", "peter", "anna", "david"]
PLACES = [["paris"], ["london"], ["new", "york"], ["los", "angeles"], ["berlin"]]
def write_conll(path: Path, sentences: int, seed: int = 0) -> Path:
    """Sentences of filler words with people (B-person) and places (one or two words, B-/I-location):
    tags a tiny model learns from the words themselves."""
    rng = random.Random(seed)
    lines = []
    for _ in range(sentences):
        words = [(w, "O") for w in rng.choices(FILLER, k=rng.randint(3, 8))]
        for _ in range(rng.randint(1, 2)):
            at = rng.randint(0, len(words))
            if rng.random() < 0.5:
                words[at:at] = [(rng.choice(PEOPLE), "B-person")]
            else:
                place = rng.choice(PLACES)
                words[at:at] = [(w, ("B-" if i == 0 else "I-") + "location") for i, w in enumerate(place)]
        lines += [f"{w}\t{t}" for w, t in words] + [""]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_wnut17_is_read_as_words_and_bio_tags():
    task = load_task("wnut17", str(WNUT))
    assert (len(task.train), len(task.dev), task.kind.name) == (3394, 1009, "token-classification")
    assert task.num_labels == 13 and task.kind.tags[0] == "O"
    assert task.kind.tags[1:3] == ("B-corporation", "I-corporation")
    first = task.train[0]
    assert first["tokens"][:3] == ["@paulwalk", "It", "'s"]
    tags = [task.kind.tags[t] for t in first["label"]]
    assert tags[14:17] == ["B-location", "I-location", "I-location"] and tags[18] == "B-location"
    assert task.metrics[0] == "entity_f1" and task.kind.headline == "entity_f1"


def test_entities_and_their_scores_follow_seqeval():
    assert entities(["B-PER", "I-PER", "O", "B-LOC"]) == {("PER", 0, 1), ("LOC", 3, 3)}
    assert entities(["I-PER", "I-PER", "O"]) == {("PER", 0, 1)}  # I- without B- starts a span
    assert entities(["B-PER", "I-LOC", "I-LOC"]) == {("PER", 0, 0), ("LOC", 1, 2)}  # a change of type ends one
    assert entities(["B-PER", "B-PER", "I-PER"]) == {("PER", 0, 0), ("PER", 1, 2)}  # B- ends the one before
    assert entities(["O", "I-ORG"]) == {("ORG", 1, 1)}
    # nested-looking: an ORG inside a LOC's words is read flat, spans never overlap
    assert entities(["B-LOC", "B-ORG", "I-LOC"]) == {("LOC", 0, 0), ("ORG", 1, 1), ("LOC", 2, 2)}
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "I-ORG"]]
    predicted = [["B-PER", "O", "O", "B-LOC"],  # the person is partial: no credit; the place is exact
                 ["B-ORG", "I-ORG", "I-ORG"]]
    scores = entity_scores(zip(gold, predicted))  # 2 correct of 3 predicted, of 3 gold
    assert scores == pytest.approx({"entity_precision": 2 / 3, "entity_recall": 2 / 3, "entity_f1": 2 / 3})
    scores = entity_scores([(["B-PER", "I-PER", "O"], ["I-PER", "I-PER", "B-LOC"])])  # I- start matches; LOC wrong
    assert scores == pytest.approx({"entity_precision": 0.5, "entity_recall": 1.0, "entity_f1": 2 / 3})
    assert entity_scores([(["O"], ["O"])]) == {"entity_precision": 0.0, "entity_recall": 0.0, "entity_f1": 0.0}


def test_the_metric_reads_only_labelled_positions():
    kind = TokenClassification(("O", "B-PER", "I-PER"))
    labels = np.array([[NO_TAG, 1, NO_TAG, 2, 0, NO_TAG]])  # [CLS] B(first piece) piece I O [SEP]
    outputs = np.zeros((1, 6, 3))
    outputs[0, [1, 3, 4], [1, 2, 0]] = 5  # right at every labelled position
    outputs[0, 2, 1] = outputs[0, 5, 1] = 9  # a B- on a second subword and on [SEP] is not seen
    metrics = kind.metrics(outputs, labels, ("entity_f1", "tag_accuracy"))
    assert metrics == {"entity_f1": 1.0, "tag_accuracy": 1.0}
    outputs[0, 3] = [0, 9, 0]  # the I- predicted as a B-: two spans instead of one
    assert kind.metrics(outputs, labels, ("entity_f1",))["entity_f1"] == 0.0


@pytest.mark.parametrize("family", TOKENIZER_FAMILIES)
def test_tags_go_to_each_words_first_subword(family, tmp_path):
    import datasets

    tokenizer = tokenizer_of(family, tmp_path, KINDS["token-classification"].tokenizer_options)
    words = ["Empire", "Statezq", "Building", "is", "Yorkish"]
    tags = [1, 2, 2, 0, 1]
    encoded = encode(datasets.Dataset.from_dict({"tokens": [words], "label": [tags]}), tokenizer, 64)
    ids, labels = encoded[0]["input_ids"], encoded[0]["label"]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    starts = [i for i, label in enumerate(labels) if label != NO_TAG]
    assert [labels[i] for i in starts] == tags  # one tag per word, in order
    assert labels[0] == labels[-1] == NO_TAG  # special tokens carry none
    # each tagged token starts its word; the untagged pieces between them belong to the word before
    bounds = [*starts, len(ids) - 1]
    for word, (start, end) in zip(words, zip(bounds, bounds[1:])):
        text = tokenizer.convert_tokens_to_string(pieces[start:end]).strip()
        assert text.lower() == word.lower(), (family, pieces, labels)
    assert len(ids) > len(words) + 2  # some word was split: the ignored positions were tested
    if family == "byte-level-bpe":  # each word tokenized as if after a space, as inside a sentence
        assert all(pieces[i].startswith("Ġ") or pieces[i] == "Ġ" for i in starts), pieces


def test_token_kd_ignores_unlabelled_positions():
    kind = KINDS["token-classification"]
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    labels = torch.tensor([[NO_TAG, 1, NO_TAG, 0, NO_TAG], [NO_TAG, 2, 2, NO_TAG, NO_TAG]])
    teacher[labels == NO_TAG] = torch.nan  # padding's soft targets are NaN: never read
    loss = kind.kd_loss(student, teacher, labels, 2.0, 0.5)
    changed = student.clone()
    changed[labels == NO_TAG] += 100  # what the student says off the labelled positions does not count
    assert kind.kd_loss(changed, teacher, labels, 2.0, 0.5).item() == pytest.approx(loss.item())
    kept = labels != NO_TAG
    s, t, y = student[kept], teacher[kept], labels[kept]
    soft = torch.nn.functional.kl_div(torch.log_softmax(s / 2, -1), torch.log_softmax(t / 2, -1), log_target=True,
                                      reduction="batchmean")
    expected = 0.5 * 4 * soft + 0.5 * torch.nn.functional.cross_entropy(s, y)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert kind.hard_loss(changed, labels).item() == pytest.approx(
        torch.nn.functional.cross_entropy(s, y).item(), rel=1e-5)


@pytest.mark.parametrize("content, message", [
    ("Paris\tB-LOC\nis\tO\n\nin\tO\nRome\tS-LOC\n", "train.conll line 5: tag 'S-LOC' is not BIO"),
    ("Paris\tB-LOC\nis\n", "train.conll line 2: 'is' has no tag"),
    ("\n\n", "train.conll: the split is empty"),
    ("Paris\tO\nis\tO\n", "every training tag is O: there is no entity to learn"),
    ("", "train.conll: the split is empty"),
])
def test_bad_tagged_files_are_one_line(run_cli, tmp_path, tiny_base, content, message):
    from conftest import refused

    folder = tmp_path / "ner"
    folder.mkdir()
    (folder / "train.conll").write_text(content)
    write_conll(folder / "dev.conll", 5)
    refused(run_cli, "--workspace", tmp_path / "ws", "teacher", "--base", tiny_base, "--task", folder,
            message=message)
    assert not (tmp_path / "ws" / "teachers").exists()


def test_jsonl_tokens_and_tags_are_a_tagging_task(tmp_path):
    rows = [{"tokens": ["john", "saw", "new", "york"], "tags": ["B-person", "O", "B-location", "I-location"]}] * 12
    (tmp_path / "ner.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = load_task(str(tmp_path / "ner.jsonl"))
    assert task.kind.name == "token-classification" and (len(task.train), len(task.dev)) == (10, 2)
    assert task.kind.tags == ("O", "B-location", "I-location", "B-person")
    (tmp_path / "held-out.conll").write_text("john\tB-person\nat\tO\nacme\tB-org\n")
    with pytest.raises(UserError, match="held-out.conll line 3: tag 'B-org' is not one of this task's tags"):
        labelled_file(task, tmp_path / "held-out.conll")  # compress eval's file: the model has no such tag
    (tmp_path / "bad.jsonl").write_text(json.dumps({"tokens": ["a", "b"], "tags": ["O"]}) + "\n")
    with pytest.raises(UserError, match="bad.jsonl line 1: a row needs `tokens` and `tags`"):
        load_task(str(tmp_path / "bad.jsonl"))


@pytest.fixture(scope="module")
def ner_teacher(tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("ner")
    (root / "ner").mkdir()
    write_conll(root / "ner" / "train.conll", 300, seed=1)
    write_conll(root / "ner" / "dev.conll", 60, seed=2)
    write_conll(root / "test.conll", 40, seed=3)
    task = load_task(str(root / "ner"))
    return fine_tune(str(tiny_base), task, root / "ws", FAST, name="tiny", progress=False), task, root


def test_a_tagger_through_every_stage(ner_teacher, run_cli):
    teacher, task, root = ner_teacher
    assert teacher.meta["data"]["kind"] == "token-classification" and teacher.meta["num_labels"] == 4
    dev = teacher.meta["metrics"]["dev"]
    assert set(dev) == {"entity_f1", "entity_precision", "entity_recall"} and dev["entity_f1"] > 0.5, dev
    config = json.loads((teacher.path / "config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"] and config["id2label"]["0"] == "O"

    student = distill(teacher, task, DistillConfig(layers=1), FAST, progress=False)
    live = distill(teacher, task, DistillConfig(layers=2, intermediate="hidden,attention", temperature=2.0), FAST,
                   progress=False)
    for made in (student, live):
        metrics = made.meta["metrics"]
        assert metrics["retention"] == pytest.approx(metrics["dev"]["entity_f1"] / metrics["teacher_dev"]["entity_f1"])
        assert 0 <= metrics["dev"]["agreement"] <= 1
    assert student.meta["metrics"]["dev"]["entity_f1"] > 0.3

    recover = TrainConfig(epochs=1, lr=1e-3, batch_size=16, seed=7, precision="fp32")
    pruned = prune(student, PruneConfig(heads=0.5, neurons=0.5), recover, progress=False)
    assert pruned.meta["structure"]["heads_per_layer"] == [2]
    assert json.loads((pruned.path / "config.json").read_text())["auto_map"] == {
        "AutoModelForTokenClassification": "modeling_compress.StructuredBertForTokenClassification",
        "AutoModel": "modeling_compress.StructuredBertModel"}  # its encoder alone, as for every structured model
    dropped = layerdrop(live, LayerDropConfig(rate=0.5, keep="1"), recover, progress=False)
    assert [v.meta["stage"] for v in dropped] == ["layerdrop", "keep-layers", "keep-layers"]
    shared = share(live, ShareConfig(groups=1), recover, progress=False)
    assert shared.meta["unique_parameters"] < live.meta["unique_parameters"]

    export(pruned)
    parity = pruned.export["parity"]
    assert parity["max_abs_diff"] <= 1e-4 and parity["rows"] == len(task.dev) and parity["tokens"] > parity["rows"]
    int8 = {mode: quantize(pruned, QuantizeConfig(mode=mode)) for mode in ("dynamic", "static")}
    int8["qat"] = quantize(pruned, QuantizeConfig(qat_epochs=0.5))
    for variant in int8.values():
        assert set(variant.meta["metrics"]["dev"]) == {"entity_f1", "entity_precision", "entity_recall"}
        assert variant.meta["metrics"]["drop_points"] == pytest.approx(
            100 * (pruned.meta["metrics"]["dev"]["entity_f1"] - variant.meta["metrics"]["dev"]["entity_f1"]), abs=1e-3)
    for variant in (teacher, pruned, int8["dynamic"]):
        measured = bench(variant, [(1, 16)], threads=1, runs=30)
        entry = next(iter(measured.benches.values()))
        assert set(entry["dev"]) == set(task.metrics)
    # the int8 artifact scored by bench, through ORT, gives what quantize measured on it
    assert next(iter(int8["dynamic"].benches.values()))["dev"] == int8["dynamic"].meta["metrics"]["dev"]

    code, out, err = run_cli("eval", pruned.path, "--data", root / "test.conll")
    assert code == 0, err
    (recorded,) = Variant.load(pruned.path).evaluations
    assert recorded["rows"] == 40 and recorded["scored_by"] == "onnx (model.onnx)"
    assert recorded["kind"] == "token-classification" and 0 <= recorded["metrics"]["entity_f1"] <= 1

    context = build(teacher.workspace, task.name)
    assert context["metric"] == "entity F1 x 100"
    code, out, err = run_cli("--workspace", teacher.workspace, "report", "--task", task.name)
    assert code == 0, err


def test_onnx_scores_equal_pytorchs_on_the_dev_split(ner_teacher):
    """The exported graph's per-token logits decode to the same tags, so the metric agrees."""
    from compress.model.checkpoint import load_classifier, load_tokenizer
    from compress.runtime import ort as runtime
    from compress.runtime.inference import predict_logits

    teacher, task, _ = ner_teacher
    export(teacher, optimize=False)
    tokenizer = load_tokenizer(teacher.path)
    dev = encode(task.dev, tokenizer, 32)
    torch_out = predict_logits(load_classifier(teacher.path), dev, tokenizer)
    ort_out = runtime.logits(runtime.session(teacher.path / "onnx" / "model.onnx"), dev, tokenizer)
    assert torch_out.shape == ort_out.shape == (len(task.dev), max(dev["length"]), 4)
    assert torch.equal(torch_out.isnan(), ort_out.isnan())  # NaN exactly where a row has no token
    labels = label_array(dev)
    assert task.scores(ort_out.numpy(), labels) == task.scores(torch_out.numpy(), labels)


def test_augmentation_replaces_words_outside_entities_only(ner_teacher):
    from compress.data.augment import augmented_rows, with_rows
    from compress.model.checkpoint import load_classifier, load_tokenizer

    teacher, task, _ = ner_teacher
    embeddings = load_classifier(teacher.path).get_input_embeddings().weight
    rows = augmented_rows(task, load_tokenizer(teacher.path), embeddings, 2, seed=3)
    assert len(rows["tokens"]) == 2 * len(task.train)
    changed = 0
    for i, (words, tags) in enumerate(zip(rows["tokens"], rows["label"])):
        original = task.train[i // 2]
        assert tags == original["label"] and len(words) == len(original["tokens"])  # no tag moves
        for new, old, tag in zip(words, original["tokens"], tags):
            changed += new != old
            assert new == old or tag == 0, (words, original)  # entities stay as they are
    assert changed > len(task.train)  # at least one word replaced per augmented sentence, most of the time
    bigger = with_rows(task, rows)
    assert len(bigger.train) == 3 * len(task.train) and bigger.train[-1]["label"] == task.train[-1]["label"]
    student = distill(teacher, task, DistillConfig(layers=1, augment=1), TrainConfig(**{**FAST.as_dict(), "epochs": 1}),
                      progress=False)
    assert student.meta["augmentation"]["added"] == len(task.train)


def test_a_recipe_and_a_search_run_a_tagging_task(ner_teacher, run_cli, tiny_base, tmp_path):
    _, task, root = ner_teacher
    recipe_and_search(run_cli, tiny_base, tmp_path, task, root / "ner")


def test_soft_targets_of_a_tagger_under_torchrun_are_a_single_processs(ner_teacher, tiny_base, tmp_path):
    """Two gloo processes each score a shard as wide as its own longest row; the gathered cache is the
    logits one process computes, NaN where a row has no token."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    from compress.model.checkpoint import load_classifier, load_tokenizer
    from compress.runtime.inference import predict_logits

    _, task, root = ner_teacher
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "compress",
         "--workspace", str(tmp_path / "ws"), "teacher", "--base", str(tiny_base), "--name", "tiny", "--task",
         str(root / "ner"), "--epochs", "1", "--lr", "1e-3", "--max-length", "32", "--precision", "fp32",
         "--batch-size", "8"], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    teacher = Variant.load(tmp_path / "ws" / "teachers" / "tiny" / task.name)
    (cached,) = (teacher.path / "soft_targets").glob("*.safetensors")
    gathered = load_file(cached)["logits"]
    tokenizer = load_tokenizer(teacher.path)
    encoded = encode(task.train, tokenizer, 32)
    assert max(encoded["length"][0::2]) != max(encoded["length"][1::2])  # the two shards differ in width
    alone = predict_logits(load_classifier(teacher.path), encoded, tokenizer)
    assert gathered.shape == alone.shape and torch.equal(gathered.isnan(), alone.isnan())
    torch.testing.assert_close(gathered.nan_to_num(), alone.nan_to_num(), atol=1e-4, rtol=1e-4)
