"""Shared fixtures: a tiny random BERT saved as a local base, real GLUE data, a learnable CSV."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    DebertaV2Config,
    DistilBertConfig,
    ElectraConfig,
    ModernBertConfig,
    MPNetConfig,
    RobertaConfig,
    XLMRobertaConfig,
)

from compress.cli import main
from compress.configs import DistillConfig, TrainConfig
from compress.data.tasks import load_task
from compress.model.registry import resolve_base
from compress.runtime.export import export
from compress.stages.distill import distill
from compress.stages.teacher import fine_tune
from compress.variant import Variant

# Random 6-layer models of every supported architecture, for structure tests.
TINY = dict(vocab_size=120, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=6,
            initializer_range=0.3)  # large weights, so that every change shows in the logits
CONFIGS = {
    "bert": BertConfig(**TINY),
    "roberta": RobertaConfig(**TINY),
    "distilbert": DistilBertConfig(vocab_size=120, dim=32, hidden_dim=64, n_heads=4, n_layers=6, initializer_range=0.3),
    "mpnet": MPNetConfig(**TINY),
    "xlm-roberta": XLMRobertaConfig(**TINY),
    "electra": ElectraConfig(embedding_size=16, **TINY),  # narrower embeddings, as ELECTRA's small models have
    # DeBERTa-v3's attention: relative positions in log buckets, c2p and p2c, through shared key projections
    "deberta-v2": DebertaV2Config(**TINY, relative_attention=True, pos_att_type=["p2c", "c2p"], share_att_key=True,
                                  position_buckets=8, max_relative_positions=32, norm_rel_ebd="layer_norm",
                                  position_biased_input=False, type_vocab_size=0),
    # ModernBERT: fused Wqkv, GLU FFN, no biases; global attention every third layer, the others a sliding
    # window of 4 tokens (2 each side), so a layer's attention type shows in the logits of 9+ tokens
    "modernbert": ModernBertConfig(**TINY, local_attention=4, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                   cls_token_id=1, sep_token_id=2),
}

GLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"

POSITIVE = ["great", "superb", "lovely", "brilliant", "wonderful"]
NEGATIVE = ["awful", "dreadful", "boring", "terrible", "clumsy"]
FILLER = ["the", "a", "film", "story", "plot", "actors", "scene", "movie", "was", "is", "and", "of", "with", "its", "this", "that", "it"]


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    assert (GLUE / "SST-2" / "train.tsv").is_file(), f"GLUE data expected at {GLUE}"
    return GLUE


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A 2-layer, 64-wide random BERT with MiniLM's real uncased WordPiece tokenizer."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_base("minilm-l6"))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=128,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_learnable_csv(path: Path, rows: int, seed: int = 0) -> Path:
    """Sentences whose label is whether their one sentiment word is positive: learnable by a tiny model."""
    rng = random.Random(seed)
    lines = ["sentence,label"]
    for _ in range(rows):
        label = rng.randint(0, 1)
        words = rng.choices(FILLER, k=rng.randint(4, 10))
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label else NEGATIVE))
        lines.append(f"{' '.join(words)},{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


FAST = TrainConfig(epochs=3, lr=1e-3, batch_size=16, max_length=32, seed=7, precision="fp32")


@pytest.fixture(scope="session")
def trained_teacher(tiny_base, tmp_path_factory):
    """A tiny teacher fine-tuned on the learnable task once per session: (variant, task).

    Shared by every test, so only module-scoped fixtures that copy it read it; tests take
    `tiny_teacher`, their own copy, and may write beside it.
    """
    folder = tmp_path_factory.mktemp("trained")
    task = load_task(str(write_learnable_csv(folder / "reviews.csv", 600)), text_column="sentence")
    return fine_tune(str(tiny_base), task, folder / "ws", FAST, name="tiny", progress=False), task


@pytest.fixture
def tiny_teacher(trained_teacher, tmp_path):
    """This test's own copy of the trained tiny teacher, in a workspace of its own: (variant, task)."""
    teacher, task = trained_teacher
    copy = shutil.copytree(teacher.path, tmp_path / "teacher-ws" / "teachers" / "tiny" / task.name)
    return Variant.load(copy), task


def student_dir(root: Path, name: str) -> Path:
    """Where a student of the tiny teacher lies in a workspace at root/ws."""
    return root / "ws" / "students" / "tiny" / "reviews" / name


def student_meta(teacher, name: str, accuracy: float = 0.5) -> dict:
    """A variant record for a model built by hand in a test, as the distill stage would write it
    (without a teacher: the fields every record needs, for tests of the saved model alone)."""
    return {"name": name, "stage": "distill", "parent": "teachers/tiny/reviews", "teacher": "tiny", "task": "reviews",
            "num_labels": 2, "data": teacher.meta["data"] if teacher else {}, "params": {"max_length": 32},
            "metrics": {"dev": {"accuracy": accuracy}}}


@pytest.fixture
def learnable_csv(tmp_path) -> Path:
    return write_learnable_csv(tmp_path / "reviews.csv", 600)


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """Run `compress ARGS...` in-process through the real entry point; return (exit code, stdout, stderr)."""

    def run(*args: str):
        capsys.readouterr()  # what the test printed before (a stage called directly): not this command's
        monkeypatch.setattr(sys, "argv", ["compress", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


# A workspace for the data-safety and write-policy tests: the tiny teacher and its 1-layer student A.
TASK = "reviews"


def snapshot(*folders: Path) -> dict:
    """Every file and folder under `folders`, with a hash of each file's bytes."""
    state = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return state


@pytest.fixture(scope="module")
def base_workspace(trained_teacher, tmp_path_factory):
    """The tiny teacher and an exported 1-layer student A, built once and copied by each test."""
    teacher, task = trained_teacher
    root = tmp_path_factory.mktemp("safety") / "ws"
    copy = Variant.load(shutil.copytree(teacher.path, root / "teachers" / "tiny" / task.name))
    student = distill(copy, task, DistillConfig(layers=1), TrainConfig(epochs=0, max_length=32, precision="fp32"),
                      name="A", progress=False)
    export(student, optimize=False)
    return root, task


@pytest.fixture
def ws(base_workspace, tmp_path):
    """(workspace, the student folder A, a victim folder beside the workspace, the task)."""
    root, task = base_workspace
    workspace = shutil.copytree(root, tmp_path / "ws")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.txt").write_text("years of work")
    return workspace, workspace / "students" / "tiny" / TASK / "A", victim, task


def refused(run_cli, *args, message: str):
    code, out, err = run_cli(*args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("compress: error: "), (args, code, err)
    assert message in lines[0], (message, lines[0])
    assert "Traceback" not in out + err


def write_recipe(path, tiny_base, task, heads=0.5, shapes="1x16", shrink=True, teacher: dict | None = None):
    """A recipe on the tiny model: teacher and a 1-layer student, then (shrink) prune, int8, bench and report.
    `teacher` changes the [teacher] table's keys (None removes one): another kind's task reads other data."""
    keys = {"base": str(tiny_base), "name": "tiny", "task": str(task), "text-column": "sentence", "epochs": 1,
            "lr": 0.001, "batch-size": 16, "max-length": 32, "precision": "fp32", **(teacher or {})}
    teach = "\n[teacher]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in keys.items()
                                       if value is not None) + """
[[stages]]
verb = "distill"
name = "L1"
layers = 1
epochs = 1
lr = 0.001
batch-size = 16
precision = "fp32"
"""
    rest = f"""
[[stages]]
verb = "prune"
name = "L1-pruned"
heads = {heads}
recover-epochs = 0

[[stages]]
verb = "quantize"
name = "L1-pruned-int8"

[bench]
shapes = "{shapes}"

[report]
"""
    path.write_text(teach + (rest if shrink else ""))
    return path


def recipe_and_search(run_cli, tiny_base, tmp_path, task, data):
    """A recipe (teacher, student, pruned int8, bench, report) and a one-trial search on the task read from
    `data`: the chain a kind must run end to end; the search's winning recipe names the same data."""
    from compress.variant import Variant

    recipe = write_recipe(tmp_path / "recipe.toml", tiny_base, data, teacher={"text-column": None})
    workspace = tmp_path / "ws"
    code, out, err = run_cli("--workspace", workspace, "run", recipe)
    assert code == 0, err
    int8 = Variant.load(workspace / "students" / "tiny" / task.name / "L1-pruned-int8")
    assert set(int8.meta["metrics"]["dev"]) == set(task.metrics) and int8.benches
    assert (workspace / "reports" / f"tiny-{task.name}.html").is_file()

    code, out, err = run_cli("--workspace", workspace, "search", "--teacher", "tiny", "--task", data,
                             "--budget-ms", "1000", "--trials", "1", "--depths", "1", "--keep-heads", "1,0.5",
                             "--keep-ffn", "1", "--precisions", "fp32", "--shape", "1x16", "--epochs", "1",
                             "--lr", "1e-3", "--batch-size", "16", "--max-length", "32", "--precision", "fp32",
                             "--recover-epochs", "0", "--proxy-examples", "32")
    assert code == 0, err
    (written,) = workspace.glob(f"search-{task.name}-*ms.toml")  # the winner as a recipe
    assert f'task = "{data}"' in written.read_text()


TOKENIZER_CORPUS = ["Empire State Building is tall in New York", "the quick brown fox jumps over the lazy dog"] * 20
TOKENIZER_FAMILIES = ["wordpiece", "byte-level-bpe", "sentencepiece"]


def tokenizer_of(family: str, folder: Path, options: dict):
    """A tokenizer of each family a kind must align words or answers for, loaded with the kind's `options`:
    WordPiece (minilm-l6's), or a tiny one trained here on TOKENIZER_CORPUS: byte-level BPE (RoBERTa's family)
    or a SentencePiece-style Unigram with Metaspace ('▁' starts a word, as XLM-R and DeBERTa-v3 have)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer, PreTrainedTokenizerFast, RobertaTokenizerFast

    if family == "wordpiece":
        return AutoTokenizer.from_pretrained(resolve_base("minilm-l6"), **options)
    if family == "byte-level-bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(TOKENIZER_CORPUS, trainers.BpeTrainer(
            vocab_size=280, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        tok.save(str(folder / "bpe.json"))
        RobertaTokenizerFast(tokenizer_file=str(folder / "bpe.json"), bos_token="<s>", eos_token="</s>",
                             pad_token="<pad>", unk_token="<unk>", mask_token="<mask>").save_pretrained(folder / "bpe")
        return AutoTokenizer.from_pretrained(folder / "bpe", **options)
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(TOKENIZER_CORPUS, trainers.UnigramTrainer(
        vocab_size=60, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], unk_token="<unk>"))
    tok.post_processor = TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[
        ("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", **options)
