"""Sentence embeddings, the third task kind: a sentence-transformers teacher as it is, distilled on a corpus,
through every stage on the tiny model, scored on STS-B dev pairs, and loaded back by sentence-transformers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import sentence_transformers as st  # the test extra: the real package loads what compress writes
import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertModel

from compress.configs import DistillConfig, LayerDropConfig, PruneConfig, QuantizeConfig, ShareConfig, TrainConfig
from compress.data.batches import encode
from compress.data.tasks import load_task
from compress.errors import UserError
from compress.kinds import KINDS
from compress.model.checkpoint import load_classifier, load_embedder, load_tokenizer
from compress.model.embedding import read_pooling
from compress.model.registry import resolve_base
from compress.runtime import ort as runtime
from compress.runtime.export import export
from compress.runtime.inference import predict_logits
from compress.stages.bench import bench
from compress.stages.distill import distill
from compress.stages.layerdrop import layerdrop
from compress.stages.prune import prune
from compress.stages.quantize import quantize
from compress.stages.report import build
from compress.stages.share import share
from compress.stages.teacher import fine_tune
from compress.training.targets import soft_targets_file
from compress.variant import Variant

from conftest import write_recipe

EMBEDDINGS = KINDS["embeddings"]
FAST = TrainConfig(epochs=1, lr=1e-3, batch_size=16, max_length=32, seed=7, precision="fp32")
RECOVER = TrainConfig(epochs=1, lr=1e-3, batch_size=16, seed=7, precision="fp32")
SENTENCES = ["A man is playing a guitar.", "Someone plays an instrument.", "The cat sleeps on the sofa."]


def as_sentence_transformer(folder, source):
    """A tiny random BERT saved as a sentence-transformers model, its modules copied from `source`."""
    tokenizer = load_tokenizer(source)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    shutil.copy(source / "modules.json", folder)
    shutil.copytree(source / "1_Pooling", folder / "1_Pooling")
    return folder


@pytest.fixture(scope="module")
def tiny_embedder(tmp_path_factory):
    return as_sentence_transformer(tmp_path_factory.mktemp("tiny-st"), resolve_base("minilm-l6"))


@pytest.fixture(scope="module")
def small_glue(glue_dir, tmp_path_factory):
    """STS-B's first 200 train and 100 dev pairs, in GLUE's layout, and a corpus file of 300 sentences."""
    root = tmp_path_factory.mktemp("glue")
    (root / "STS-B").mkdir()
    train = (glue_dir / "STS-B" / "train.tsv").read_text(encoding="utf-8").splitlines()
    dev = (glue_dir / "STS-B" / "dev.tsv").read_text(encoding="utf-8").splitlines()
    (root / "STS-B" / "train.tsv").write_text("\n".join(train[:201]) + "\n")
    (root / "STS-B" / "dev.tsv").write_text("\n".join(dev[:101]) + "\n")
    sentences = [line.split("\t")[7] for line in train[201:501]]
    (root / "corpus.txt").write_text("\n".join(sentences) + "\n\n")  # a blank line is skipped
    return root


@pytest.fixture(scope="module")
def emb_teacher(tiny_embedder, small_glue, tmp_path_factory):
    task = load_task("embeddings", str(small_glue), corpus=str(small_glue / "corpus.txt"))
    teacher = fine_tune(str(tiny_embedder), task, tmp_path_factory.mktemp("emb") / "ws", FAST, name="tiny",
                        progress=False)
    return teacher, task


def test_the_embedder_is_the_sentence_transformers_model():
    """MiniLM-L6's own files say mean pooling and normalisation; compress's embedder gives its embeddings."""
    base = resolve_base("minilm-l6")
    assert read_pooling(base) == {"mode": "mean", "normalize": True, "max_seq_length": 256,
                                  "from": ["modules.json", "1_Pooling/config.json"]}
    tokenizer, model = load_tokenizer(base), load_embedder(base).eval()
    with torch.no_grad():
        ours = model(**tokenizer(SENTENCES, padding=True, return_tensors="pt")).logits
    theirs = st.SentenceTransformer(str(base), device="cpu").encode(SENTENCES, convert_to_tensor=True)
    assert torch.allclose(ours, theirs, atol=1e-5) and ours.shape == (3, 384)


@pytest.mark.parametrize("mode", ["cls", "max"])
def test_cls_and_max_pooling_match_sentence_transformers(tiny_embedder, tmp_path, mode):
    folder = shutil.copytree(tiny_embedder, tmp_path / mode)
    config = json.loads((folder / "1_Pooling" / "config.json").read_text())
    config.update(pooling_mode_mean_tokens=False, **{f"pooling_mode_{'cls_token' if mode == 'cls' else 'max_tokens'}": True})
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(config))
    modules = json.loads((folder / "modules.json").read_text())
    (folder / "modules.json").write_text(json.dumps(modules[:2]))  # no Normalize module
    assert read_pooling(folder)["mode"] == mode and not read_pooling(folder)["normalize"]
    tokenizer, model = load_tokenizer(folder), load_embedder(folder).eval()
    with torch.no_grad():
        ours = model(**tokenizer(SENTENCES, padding=True, return_tensors="pt")).logits
    theirs = st.SentenceTransformer(str(folder), device="cpu").encode(SENTENCES, convert_to_tensor=True)
    assert torch.allclose(ours, theirs, atol=1e-5) and not torch.allclose(ours.norm(dim=1), torch.ones(3))


@pytest.mark.parametrize("change, message", [
    (lambda f: (f / "modules.json").unlink(), "is not a sentence-transformers model: it has no modules.json"),
    (lambda f: (f / "modules.json").write_text("[{"), "modules.json is not valid JSON"),
    (lambda f: (f / "1_Pooling" / "config.json").unlink(), "it has no 1_Pooling/config.json"),
    (lambda f: (f / "modules.json").write_text(json.dumps(
        json.loads((f / "modules.json").read_text()) + [{"path": "3_Dense", "type": "sentence_transformers.models.Dense"}])),
     "modules Transformer, Pooling, Normalize, Dense; compress distils Transformer, Pooling and an optional Normalize"),
    (lambda f: (f / "1_Pooling" / "config.json").write_text(json.dumps(
        {"pooling_mode_mean_tokens": True, "pooling_mode_weightedmean_tokens": True})),
     "exactly one of mean, CLS or max pooling, found mean, pooling_mode_weightedmean_tokens"),
])
def test_a_missing_or_garbled_pooling_file_is_one_line(run_cli, tiny_embedder, small_glue, tmp_path, change, message):
    from conftest import refused

    folder = shutil.copytree(tiny_embedder, tmp_path / "base")
    change(folder)
    refused(run_cli, "--workspace", tmp_path / "ws", "teacher", "--base", folder, "--task", "embeddings",
            "--data-dir", small_glue, message=message)
    assert not (tmp_path / "ws" / "teachers").exists()


def test_bad_corpus_and_task_flags_are_one_line(run_cli, small_glue, tiny_embedder, tmp_path):
    from conftest import refused

    (tmp_path / "empty.txt").write_text("\n \n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    common = ("--workspace", tmp_path / "ws", "teacher", "--base", tiny_embedder, "--data-dir", small_glue)
    refused(run_cli, *common, "--task", "embeddings", "--corpus", tmp_path / "empty.txt",
            message="the corpus holds no sentences")
    refused(run_cli, *common, "--task", "embeddings", "--corpus", tmp_path / "latin1.txt", message="not UTF-8 text")
    refused(run_cli, *common, "--task", "embeddings", "--corpus", tmp_path / "none.txt", message="corpus file not found")
    refused(run_cli, *common, "--task", "stsb", "--corpus", tmp_path / "empty.txt",
            message="--corpus gives the sentences of the embeddings task, not of stsb")
    refused(run_cli, *common, "--task", "embeddings", "--num-labels", "3", message="--num-labels counts classes")
    assert not (tmp_path / "ws" / "teachers").exists()


def test_the_default_corpus_is_stsb_train_and_the_record_says_so(small_glue):
    task = load_task("embeddings", str(small_glue))
    pairs = load_task("stsb", str(small_glue))
    expected = list(dict.fromkeys(s for row in pairs.train for s in (row["text"], row["text_pair"])))
    assert task.train["text"] == expected and all(np.isnan(task.train["label"]))
    assert "the distinct sentences of STS-B's train split" in task.source and "no --corpus given" in task.source
    assert task.dev["text"][:2] == [pairs.dev[0]["text"], pairs.dev[0]["text_pair"]]
    assert task.dev["label"][:2] == [pairs.dev[0]["label"]] * 2 and len(task.dev) == 2 * len(pairs.dev)


def test_spearman_and_recall_match_their_definitions():
    first = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    second = np.array([[1.0, 0.1], [0.2, 1.0], [-1.0, 0.0]])
    rows = np.stack([first, second], 1).reshape(6, 2)  # pair i is rows 2i and 2i + 1
    gold = np.repeat([5.0, 4.0, 1.0], 2)
    metrics = EMBEDDINGS.metrics(rows * 3, gold, ("stsb_spearman", "recall@1", "recall@10"))  # scale-free: cosine
    assert metrics["stsb_spearman"] == pytest.approx(1.0)  # the cosines fall as the scores do
    assert metrics["recall@1"] == metrics["recall@10"] == 1.0  # pairs 0 and 1 (score >= 4) find each other
    swapped = np.stack([first, second[[1, 0, 2]]], 1).reshape(6, 2)
    assert EMBEDDINGS.metrics(swapped, gold, ("recall@1",)) == {"recall@1": 0.0}


def test_the_kd_loss_weighs_distance_and_cosine():
    student, teacher = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])  # orthogonal unit vectors
    assert EMBEDDINGS.kd_loss(student, teacher, None, None, 1.0).item() == pytest.approx(2.0)  # squared distance
    assert EMBEDDINGS.kd_loss(student, teacher, None, None, 0.0).item() == pytest.approx(1.0)  # 1 - cosine
    assert EMBEDDINGS.kd_loss(teacher, teacher, None, None, 0.5).item() == pytest.approx(0.0)


def test_the_teacher_is_taken_as_it_is_and_its_corpus_embeddings_are_cached(emb_teacher, tiny_embedder):
    teacher, task = emb_teacher
    record = teacher.meta
    assert record["params"]["fine_tuned"] is False and "epochs" not in record["params"]
    assert record["params"]["pooling"]["mode"] == "mean" and record["data"]["kind"] == "embeddings"
    assert record["data"]["source"].startswith("corpus ") and "300 sentences" in record["data"]["source"]
    assert set(record["metrics"]["dev"]) == {"stsb_spearman", "recall@1", "recall@10"}
    cache = soft_targets_file(teacher, task, FAST.max_length)
    tokenizer = load_tokenizer(teacher.path)
    expected = predict_logits(load_embedder(tiny_embedder), encode(task.train, tokenizer, FAST.max_length), tokenizer)
    assert torch.allclose(load_file(cache)["logits"], expected, atol=1e-5)
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # written whole, under its fingerprint


def test_embeddings_through_every_stage_and_back_into_sentence_transformers(emb_teacher, small_glue, run_cli):
    teacher, task = emb_teacher
    student = distill(teacher, task, DistillConfig(layers=1), FAST, progress=False)
    metrics = student.meta["metrics"]
    assert metrics["retention"] == pytest.approx(metrics["dev"]["stsb_spearman"] / metrics["teacher_dev"]["stsb_spearman"])
    assert 0 < metrics["dev"]["teacher_cosine"] <= 1 and student.meta["kd"]["temperature"]["value"] is None
    live = distill(teacher, task, DistillConfig(layers=2, intermediate="hidden,attention", augment=1), FAST,
                   progress=False)
    assert live.meta["augmentation"]["added"] == len(task.train) and live.meta["layer_map"] == [0, 1]

    pruned = prune(live, PruneConfig(heads=0.5, neurons=0.5), RECOVER, progress=False)
    assert sum(pruned.meta["structure"]["heads_per_layer"]) == 4  # of 8, ranked across layers by the embedding loss
    dropped = layerdrop(live, LayerDropConfig(rate=0.5, keep="1"), RECOVER, progress=False)
    assert [v.meta["stage"] for v in dropped] == ["layerdrop", "keep-layers", "keep-layers"]
    shared = share(live, ShareConfig(groups=1), RECOVER, progress=False)
    assert shared.meta["unique_parameters"] < live.meta["unique_parameters"]

    for variant in (student, pruned):  # pooling and normalisation inside the graph: its output is the embedding
        export(variant)
        parity = Variant.load(variant.path).export["parity"]
        assert parity["min_cosine"] > 1 - 1e-4 and parity["max_abs_diff"] <= 1e-4
        graph = onnx.load(str(variant.path / "onnx" / "model.onnx"))
        assert [o.name for o in graph.graph.output] == ["sentence_embedding"]
        tokenizer = load_tokenizer(variant.path)
        batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
        sess = runtime.session(variant.path / "onnx" / "model.onnx")
        (onnx_out,) = sess.run(None, runtime.feed(sess, batch))
        assert np.allclose(np.linalg.norm(onnx_out, axis=1), 1, atol=1e-5)

    int8 = quantize(pruned, QuantizeConfig(mode="dynamic"))
    qat = quantize(student, QuantizeConfig(qat_epochs=0.5))
    for variant in (int8, qat):
        assert set(variant.meta["metrics"]["dev"]) == {"stsb_spearman", "recall@1", "recall@10"}
    measured = bench(int8, [(1, 16)], threads=1, runs=30)
    assert next(iter(measured.benches.values()))["dev"] == int8.meta["metrics"]["dev"]

    context = build(teacher.workspace, "embeddings")
    assert context["metric"] == "STS-B Spearman x 100"
    code, out, err = run_cli("--workspace", teacher.workspace, "report", "--task", "embeddings")
    assert code == 0, err

    # every trained variant is a sentence-transformers model: the plain one loads as it is, a pruned or shared one
    # through its shipped modeling file; both embed as compress does
    for variant, trusted in ((student, False), (pruned, True), (shared, True)):
        tokenizer, model = load_tokenizer(variant.path), load_classifier(variant.path).eval()
        with torch.no_grad():
            ours = model(**tokenizer(SENTENCES, padding=True, return_tensors="pt")).logits
        loaded = st.SentenceTransformer(str(variant.path), device="cpu", trust_remote_code=trusted)
        assert torch.allclose(loaded.encode(SENTENCES, convert_to_tensor=True), ours, atol=1e-5), variant.path
    with pytest.raises(Exception):  # noqa: B017 - without the modeling file, the pruned shapes do not load
        st.SentenceTransformer(str(pruned.path), device="cpu")


def test_distill_reads_naturally_on_the_command_line(run_cli, emb_teacher, small_glue):
    from conftest import refused

    teacher, _ = emb_teacher
    workspace = teacher.workspace
    common = ("--workspace", workspace, "distill", "--teacher", "tiny", "--task", "embeddings", "--data-dir", small_glue,
              "--corpus", small_glue / "corpus.txt", "--max-length", "32", "--precision", "fp32")
    refused(run_cli, *common, "--layers", "1", "--no-kd", message="--no-kd trains on labels alone")
    refused(run_cli, *common, "--layers", "1", "--temperature", "3", "--name", "L1-t",
            message="--temperature softens a softmax")
    code, out, err = run_cli(*common, "--layers", "1", "--epochs", "0", "--name", "L1-cli")
    assert code == 0, err
    assert "stsb_spearman" in out and (workspace / "students" / "tiny" / "embeddings" / "L1-cli" / "modules.json").is_file()


def test_another_corpus_needs_no_new_teacher(emb_teacher, small_glue):
    """The teacher was not trained on its corpus: a student may distil on another, whose embeddings are cached apart."""
    teacher, _ = emb_teacher
    other = load_task("embeddings", str(small_glue))
    student = distill(teacher, other, DistillConfig(layers=1), TrainConfig(**{**FAST.as_dict(), "epochs": 0}),
                      name="L1-default-corpus", progress=False)
    assert student.meta["data"]["fingerprint"] == other.fingerprint != teacher.meta["data"]["fingerprint"]
    with pytest.raises(UserError, match="an embedding teacher is the sentence-transformers model as it is"):
        EMBEDDINGS.head(2)


def test_the_embeddings_preset_is_a_recipe_every_verb_accepts(run_cli, tmp_path, small_glue):
    import tomllib

    code, out, err = run_cli("init", tmp_path / "ws", "--preset", "embeddings")
    assert code == 0, err
    recipe = tomllib.loads((tmp_path / "ws" / "recipe.toml").read_text())
    assert (recipe["teacher"]["base"], recipe["teacher"]["task"]) == ("mpnet-base", "embeddings")
    (tmp_path / "ws" / "recipe.toml").write_text((tmp_path / "ws" / "recipe.toml").read_text().replace(
        '# corpus = "sentences.txt"', f'corpus = "{small_glue / "corpus.txt"}"').replace(
        '# data-dir = "../shared/data/glue"', f'data-dir = "{small_glue}"'))
    code, out, err = run_cli("--workspace", tmp_path / "ws", "run", tmp_path / "ws" / "recipe.toml", "--dry-run")
    assert code == 0, err  # every stage's flags are checked by its verb
    assert [line.split()[0] for line in out.splitlines()[2:5]] == ["distill", "prune", "quantize"], out


def test_search_on_embeddings_proxies_by_the_embedding_loss_and_its_recipe_keeps_the_corpus(run_cli, emb_teacher,
                                                                                            small_glue):
    import tomllib

    teacher, _ = emb_teacher
    workspace = teacher.workspace
    code, out, err = run_cli("--workspace", workspace, "search", "--teacher", "tiny", "--task", "embeddings",
                             "--data-dir", small_glue, "--corpus", small_glue / "corpus.txt", "--budget-ms", "1000",
                             "--trials", "1", "--depths", "1", "--keep-heads", "1,0.5", "--keep-ffn", "1",
                             "--precisions", "fp32", "--shape", "1x16", "--epochs", "1", "--lr", "1e-3",
                             "--batch-size", "16", "--max-length", "32", "--precision", "fp32", "--recover-epochs", "0",
                             "--proxy-examples", "32")
    assert code == 0, err
    record = json.loads((workspace / "reports" / "search-embeddings-1000ms.json").read_text())
    assert all(c["kl"] >= 0 for c in record["proxy"]["candidates"].values())
    (trial,) = record["trials"]
    variant = Variant.load(workspace / trial["variant"])
    assert trial["score"] == variant.benches[record["machine_key"]]["dev"]["stsb_spearman"]
    assert f"winner {record['winner']['candidate']}" in out
    recipe = tomllib.loads((workspace / record["recipe"]).read_text())
    assert recipe["teacher"]["corpus"] == str(small_glue / "corpus.txt") and recipe["teacher"]["task"] == "embeddings"


def test_compress_run_and_eval_on_embeddings(run_cli, tiny_embedder, small_glue, tmp_path):
    """A recipe from a sentence-transformers base to a pruned int8 student, benched and reported; then
    `compress eval` scores a file of STS-B's format on the artifact."""
    recipe = write_recipe(tmp_path / "recipe.toml", tiny_embedder, "embeddings", teacher={
        "data-dir": str(small_glue), "corpus": str(small_glue / "corpus.txt"), "text-column": None, "epochs": None,
        "lr": None, "batch-size": None})  # an embedding teacher is taken as it is: nothing to train
    workspace = tmp_path / "ws"
    code, out, err = run_cli("--workspace", workspace, "run", recipe)
    assert code == 0, err
    int8 = Variant.load(workspace / "students" / "tiny" / "embeddings" / "L1-pruned-int8")
    assert int8.record.params["mode"] == "dynamic" and set(next(iter(int8.benches.values()))["dev"]) == {
        "stsb_spearman", "recall@1", "recall@10"}
    assert (workspace / "reports" / "tiny-embeddings.html").is_file()

    dev = (small_glue / "STS-B" / "dev.tsv").read_text().splitlines()
    held_out = tmp_path / "sts-test.tsv"
    held_out.write_text("\n".join([dev[0], *dev[51:101]]) + "\n")
    code, out, err = run_cli("eval", int8.path, "--data", held_out)
    assert code == 0, err
    (recorded,) = Variant.load(int8.path).evaluations
    assert recorded["rows"] == 100 and recorded["scored_by"] == "onnx (model.onnx)"  # 50 pairs, two rows each
    assert set(recorded["metrics"]) == {"stsb_spearman", "recall@1", "recall@10"}
