"""Extractive question answering, the fifth task kind: SQuAD v1.1 JSON, overlapping windows, span decoding
across windows, SQuAD's EM and F1, KD on start and end logits, and a reader through every stage on the tiny model."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compress.api import (
    DistillConfig,
    LayerDropConfig,
    PruneConfig,
    QuantizeConfig,
    ShareConfig,
    TaskConfig,
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
from compress.kinds import (
    EXAMPLE,
    FIRST_CHAR,
    KINDS,
    LAST_CHAR,
    QuestionAnswering,
    exact_match,
    normalize_answer,
    squad_f1,
)
from compress.model.checkpoint import load_classifier, load_tokenizer
from compress.model.registry import resolve_base
from compress.stages.report import build
from compress.training.targets import soft_targets_file
from compress.variant import Variant

from conftest import TOKENIZER_FAMILIES, recipe_and_search, refused, tokenizer_of

FAST = TrainConfig(epochs=3, lr=1e-3, batch_size=16, max_length=32, seed=7, precision="fp32")
NAMES = ["john", "mary", "peter", "anna", "david"]
CITIES = ["paris", "london", "berlin", "madrid", "rome"]
FILLER = ["the", "story", "was", "long", "and", "then", "we", "saw", "a", "film", "with", "friends", "at", "night"]


def squad(paragraphs: int, seed: int) -> dict:
    """SQuAD v1.1 JSON whose contexts say who lives where amid filler words (some longer than a window of 32
    tokens), each asked where the person lives and who lives in the city: answers a tiny model learns."""
    rng = random.Random(seed)
    made = []
    for k in range(paragraphs):
        name, city = rng.choice(NAMES), rng.choice(CITIES)
        words = rng.choices(FILLER, k=rng.randint(4, 30))
        words[rng.randint(0, len(words)):0] = [name, "lives", "in", city, "."]
        context = " ".join(words)
        made.append({"context": context, "qas": [
            {"id": f"{seed}-{k}-where", "question": f"Where does {name} live?",
             "answers": [{"text": city, "answer_start": context.index(f"{name} lives in") + len(name) + 10}]},
            {"id": f"{seed}-{k}-who", "question": f"Who lives in {city}?",
             "answers": [{"text": name, "answer_start": context.index(f"{name} lives")}]}]})
    return {"version": "1.1", "data": [{"title": "made up", "paragraphs": made}]}


def write_squad(folder: Path, train: int = 200, dev: int = 30) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.json").write_text(json.dumps(squad(train, 1)))
    (folder / "dev.json").write_text(json.dumps(squad(dev, 2)))
    return folder


def one_question(context: str, question: str, answer: str) -> dict:
    return {"data": [{"title": "t", "paragraphs": [{"context": context, "qas": [
        {"id": "q", "question": question, "answers": [{"text": answer, "answer_start": context.index(answer)}]}]}]}]}


def test_squad_files_are_questions_with_contexts_and_answers(tmp_path):
    task = load_task(str(write_squad(tmp_path / "qa")))
    assert (len(task.train), len(task.dev), task.kind.name, task.num_labels) == (400, 60, "question-answering", 2)
    first = task.train[0]
    assert first["text"].startswith("Where does") and first["answers"][0] in first["text_pair"]
    assert first["text_pair"][first["starts"][0]:].startswith(first["answers"][0])
    assert task.metrics == ("qa_f1", "exact_match") and task.kind.headline == "qa_f1"
    assert task.kind.examples[first["label"]] == (first["text_pair"], first["answers"])
    # one file: every tenth paragraph is dev, its two questions with it
    (tmp_path / "all.json").write_text(json.dumps(squad(20, 3)))
    task = load_task(str(tmp_path / "all.json"))
    assert (task.name, len(task.train), len(task.dev)) == ("all", 36, 4)


def test_the_answer_in_a_later_window_is_found_there(tiny_base):
    """A context three windows long whose answer lies in its last: only that window points at the answer,
    the others at CLS, and decoding maps the best span across windows back to the context's characters."""
    tokenizer = load_tokenizer(tiny_base)
    context = " ".join(["the story was long and then we saw a film"] * 4) + " and mary lives in rome ."
    task_kind = QuestionAnswering()
    from compress.data.tasks import _squad_rows

    rows = _squad_rows([{"text": ["where does mary live?"], "text_pair": [context], "answers": [["rome"]],
                         "starts": [[context.index("rome")]],
                         "label": [task_kind.add("where does mary live?", context, ["rome"])]}])
    encoded = encode(rows, tokenizer, 24)
    labels = label_array(encoded)
    assert len(encoded) >= 3 and (labels[:, :, EXAMPLE][:, 0] == 0).all()  # one question, many windows
    starts, ends = labels[..., 0].argmax(1), labels[..., 1].argmax(1)
    assert (starts[:-1] == 0).all() and (ends[:-1] == 0).all()  # earlier windows: CLS
    last = labels[-1]
    assert starts[-1] > 0 and context[last[starts[-1], FIRST_CHAR]:last[ends[-1], FIRST_CHAR + 1]] == "rome"
    # consecutive windows share the stride's context tokens (by default half a window)
    chars = [set(window[:, FIRST_CHAR][window[:, FIRST_CHAR] >= 0]) for window in labels]
    assert all(len(a & b) == 12 for a, b in zip(chars, chars[1:]))
    outputs = np.zeros((*labels.shape[:2], 2))
    outputs[0, 1, :] = 50  # the question's own token scores high in the first window: never an answer
    outputs[-1, starts[-1], 0] = outputs[-1, ends[-1], 1] = 10  # the last window's answer
    outputs[0, 8, 0], outputs[0, 9, 1] = 9, 9  # a valid but weaker span in the first window
    assert task_kind.predictions(outputs, labels) == {0: "rome"}
    assert task_kind.metrics(outputs, labels, ("qa_f1", "exact_match")) == {"qa_f1": 1.0, "exact_match": 1.0}
    outputs[-1, starts[-1], 0] = 8  # now the first window's span wins: its characters are read
    first = labels[0]
    assert task_kind.predictions(outputs, labels) == {0: context[first[8, FIRST_CHAR]:first[9, FIRST_CHAR + 1]]}


@pytest.mark.parametrize("family", TOKENIZER_FAMILIES)
@pytest.mark.parametrize("answer", ["New York", "Empire State Building"])
def test_an_answers_tokens_map_back_to_its_exact_text(family, answer, tmp_path):
    """For WordPiece, byte-level BPE (whose tokens carry the space before a word) and SentencePiece (whose '▁'
    starts one), the window's start and end targets fall on the answer's first and last token, and the
    characters those tokens cover are the answer itself: what decoding returns."""
    from compress.data.tasks import _squad_rows

    tokenizer = tokenizer_of(family, tmp_path, QuestionAnswering.tokenizer_options)
    context = "the quick brown fox jumps over the lazy dog near the Empire State Building in New York ."
    kind = QuestionAnswering()
    rows = _squad_rows([{"text": ["where is the dog?"], "text_pair": [context], "answers": [[answer]],
                         "starts": [[context.index(answer)]], "label": [kind.add("where is the dog?", context, [answer])]}])
    labels = label_array(encode(rows, tokenizer, 128))
    assert labels.shape[0] == 1  # one window holds it all
    start, end = labels[0, :, 0].argmax(), labels[0, :, 1].argmax()
    assert 0 < start <= end and context[labels[0, start, FIRST_CHAR]:labels[0, end, LAST_CHAR]] == answer
    outputs = np.zeros((*labels.shape[:2], 2))
    outputs[0, start, 0] = outputs[0, end, 1] = 10
    assert kind.predictions(outputs, labels) == {0: answer}


def test_doc_stride_and_max_answer_length_are_the_tasks_and_reload_with_it(tmp_path):
    """--doc-stride and --max-answer-length belong to the task: recorded in its spec, so a later stage that
    loads it again (variant records hold the spec) windows and decodes alike, and its soft targets and
    resumable runs are keyed apart from the default windows'."""
    folder = write_squad(tmp_path / "qa", train=20, dev=10)
    task = TaskConfig(task=str(folder), doc_stride=3, max_answer_length=2).load()
    assert (task.kind.doc_stride, task.kind.max_answer_tokens) == (3, 2)
    again = load_task(**task.spec)
    assert (again.kind.doc_stride, again.kind.max_answer_tokens, again.spec) == (3, 2, task.spec)
    long_question = max(range(len(task.train)), key=lambda i: len(task.train[i]["text_pair"]))
    rows = task.train.select([long_question])
    chars = [set(w[:, FIRST_CHAR][w[:, FIRST_CHAR] >= 0]) for w in label_array(task.encode(rows, load_tokenizer(
        resolve_base("minilm-l6")), 24))]
    assert len(chars) >= 3 and all(len(a & b) == 3 for a, b in zip(chars, chars[1:]))
    default = load_task(str(folder))
    assert default.kind.doc_stride is None and default.kind.max_answer_tokens == QuestionAnswering.MAX_ANSWER_TOKENS
    teacher = SimpleNamespace(workspace=tmp_path, path=tmp_path / "teachers" / "t" / "qa")  # all the name reads
    # the stride is in the fingerprint: other windows key their own soft targets, augmented rows and runs
    assert default.fingerprint != task.fingerprint == TaskConfig(task=str(folder), doc_stride=3).load().fingerprint
    assert soft_targets_file(teacher, task, 24) != soft_targets_file(teacher, default, 24)


@pytest.mark.parametrize("settings, message", [
    ({"task": "sst2", "doc_stride": 64}, "--doc-stride window and decode a SQuAD task, not sst2"),
    ({"task": "SQUAD", "max_answer_length": 0}, "--max-answer-length counts tokens: 0 is not one or more"),
])
def test_reading_settings_outside_a_reader_are_one_line(settings, message, tmp_path, glue_dir):
    settings["task"] = str(write_squad(tmp_path / "qa", 20, 10)) if settings["task"] == "SQUAD" else settings["task"]
    with pytest.raises(UserError, match=message):
        load_task(data_dir=str(glue_dir), **settings)


def test_decoding_keeps_spans_valid():
    """End before start, a span longer than the limit, a token outside the context: none is chosen."""
    kind = QuestionAnswering()
    kind.add("which?", "alpha beta gamma", ["beta"])
    chars = [(-1, -1), (0, 5), (6, 10), (11, 16), (-1, -1)]  # CLS, alpha, beta, gamma, SEP
    labels = np.array([[[0, 0, a, b, 0] for a, b in chars]])
    outputs = np.zeros((1, 5, 2))
    outputs[0, 3, 0], outputs[0, 1, 1] = 9, 9  # start after end: invalid
    outputs[0, 4, 0] = outputs[0, 4, 1] = 20  # SEP is not context
    outputs[0, 2, 0], outputs[0, 2, 1] = 5, 5  # beta alone is the best valid span
    assert kind.predictions(outputs, labels) == {0: "beta"}
    kind.max_answer_tokens = 2
    outputs[0, 1] = outputs[0, 3] = 0
    outputs[0, 1, 0], outputs[0, 3, 1] = 8, 8  # alpha..gamma scores most (16), but is three tokens long
    assert kind.predictions(outputs, labels) == {0: "alpha beta"}  # 13, two tokens


def test_exact_match_and_f1_follow_squads_official_script():
    assert normalize_answer("The  Eiffel-Tower, in Paris!") == "eiffeltower in paris"
    assert normalize_answer("an apple a day") == "apple day"
    assert exact_match("the Rome.", "rome") == 1.0 and exact_match("rome italy", "rome") == 0.0
    assert squad_f1("rome italy", "rome") == pytest.approx(2 * 0.5 * 1 / 1.5)  # precision 1/2, recall 1
    assert squad_f1("in the city of rome", "rome city center") == pytest.approx(2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3))
    assert squad_f1("the", "a") == 0.0  # both normalise to nothing: no common token
    kind = QuestionAnswering()
    kind.add("where?", "paris is in france and rome is in italy", ["rome", "rome italy"])  # best over the gold answers
    kind.add("where?", "paris is in france", ["paris"])
    chars = [(-1, -1), (0, 5), (6, 8), (9, 11), (12, 18), (19, 22), (23, 27), (28, 30), (31, 33), (34, 39)]
    labels = np.array([[[0, 0, a, b, 0] for a, b in chars], [[0, 0, *(c if c[1] <= 18 else (-1, -1)), 1] for c in chars]])
    outputs = np.zeros((2, len(chars), 2))
    outputs[0, 6, 0] = outputs[0, 9, 1] = 5  # "rome is in italy"
    outputs[1, 4, 0] = outputs[1, 4, 1] = 5  # "france"
    metrics = kind.metrics(outputs, labels, ("qa_f1", "exact_match"))
    best_first = max(squad_f1("rome is in italy", "rome"), squad_f1("rome is in italy", "rome italy"))
    assert best_first == pytest.approx(2 * (2 / 4) * 1 / (2 / 4 + 1))
    assert metrics == pytest.approx({"qa_f1": (best_first + 0.0) / 2, "exact_match": 0.0})


def test_kd_on_start_and_end_logits_matches_a_hand_computation():
    kind = KINDS["question-answering"]
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 6, 2), torch.randn(2, 6, 2)
    labels = torch.zeros(2, 6, 5, dtype=torch.long)
    labels[0, 2, 0] = labels[0, 3, 1] = 1  # window 0: answer at tokens 2..3
    labels[1, 0, 0] = labels[1, 0, 1] = 1  # window 1: no answer, CLS
    labels[1, 4:] = NO_TAG  # window 1 is two tokens shorter: padding
    teacher[1, 4:] = torch.nan  # cached soft targets are NaN there
    loss = kind.kd_loss(student, teacher, labels, 2.0, 0.3)
    expected = 0
    for half, targets in ((0, (2, 0)), (1, (3, 0))):
        soft = hard = 0
        for row, length in ((0, 6), (1, 4)):
            s, t = student[row, :length, half], teacher[row, :length, half]
            soft += F.kl_div(F.log_softmax(s / 2, -1), F.log_softmax(t / 2, -1), log_target=True, reduction="sum")
            hard += F.cross_entropy(s[None], torch.tensor([targets[row]]))
        expected += (0.3 * 4 * soft / 2 + 0.7 * hard / 2) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    changed = student.clone()
    changed[1, 4:] += 100  # what the student says on padding does not count
    assert kind.kd_loss(changed, teacher, labels, 2.0, 0.3).item() == pytest.approx(loss.item(), rel=1e-5)
    hard = (F.cross_entropy(student[0, :, 0][None], torch.tensor([2])) + F.cross_entropy(
        student[1, :4, 0][None], torch.tensor([0]))) / 2
    hard_end = (F.cross_entropy(student[0, :, 1][None], torch.tensor([3])) + F.cross_entropy(
        student[1, :4, 1][None], torch.tensor([0]))) / 2
    assert kind.hard_loss(student, labels).item() == pytest.approx(((hard + hard_end) / 2).item(), rel=1e-5)


@pytest.mark.parametrize("content, message", [
    ("", "train.json: the file is empty"),
    ('{"data": []}', "train.json: the split is empty"),
    ("{not json", "train.json: not JSON"),
    ('{"data": [{"paragraphs": [{"context": "x"}]}]}', "train.json: not SQuAD v1.1 JSON"),
    (json.dumps({"data": [{"paragraphs": [{"context": "mary lives in rome", "qas": [
        {"id": "q7", "question": "where?", "answers": [{"text": "rome", "answer_start": 3}]}]}]}]}),
     "train.json: question q7: answer 'rome' is not at character 3 of its context"),
])
def test_bad_squad_files_are_one_line(run_cli, tmp_path, tiny_base, content, message):
    folder = write_squad(tmp_path / "qa", 5, 5)
    (folder / "train.json").write_text(content)
    refused(run_cli, "--workspace", tmp_path / "ws", "teacher", "--base", tiny_base, "--task", folder,
            message=message)
    assert not (tmp_path / "ws" / "teachers").exists()


@pytest.fixture(scope="module")
def qa_teacher(tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("qa")
    write_squad(root / "qa")
    (root / "test.json").write_text(json.dumps(squad(20, 3)))
    task = load_task(str(root / "qa"))
    return fine_tune(str(tiny_base), task, root / "ws", FAST, name="tiny", progress=False), task, root


def test_a_reader_through_every_stage(qa_teacher, run_cli):
    teacher, task, root = qa_teacher
    assert teacher.meta["data"]["kind"] == "question-answering" and teacher.meta["num_labels"] == 2
    dev = teacher.meta["metrics"]["dev"]
    assert set(dev) == {"qa_f1", "exact_match"} and dev["qa_f1"] > 0.4, dev
    config = json.loads((teacher.path / "config.json").read_text())
    assert config["architectures"] == ["SpanBertForQuestionAnswering"]
    served = __import__("transformers").AutoModelForQuestionAnswering.from_pretrained(teacher.path)
    assert type(served).__name__ == "BertForQuestionAnswering"  # a plain reader for anyone serving it

    student = distill(teacher, task, DistillConfig(layers=1, temperature=2.0), FAST, progress=False)
    live = distill(teacher, task, DistillConfig(layers=2, intermediate="hidden"), FAST, progress=False)
    for made in (student, live):
        metrics = made.meta["metrics"]
        assert metrics["retention"] == pytest.approx(metrics["dev"]["qa_f1"] / metrics["teacher_dev"]["qa_f1"])
        assert 0 <= metrics["dev"]["agreement"] <= 1
    assert student.meta["metrics"]["dev"]["qa_f1"] > 0.25

    recover = TrainConfig(epochs=1, lr=1e-3, batch_size=16, seed=7, precision="fp32")
    pruned = prune(student, PruneConfig(heads=0.5, neurons=0.5), recover, progress=False)
    assert pruned.meta["structure"]["heads_per_layer"] == [2]
    assert json.loads((pruned.path / "config.json").read_text())["auto_map"] == {
        "AutoModelForQuestionAnswering": "modeling_compress.SpanBertForQuestionAnswering",
        "AutoModel": "modeling_compress.StructuredBertModel"}
    dropped = layerdrop(live, LayerDropConfig(rate=0.5, keep="1"), recover, progress=False)
    assert [v.meta["stage"] for v in dropped] == ["layerdrop", "keep-layers", "keep-layers"]
    shared = share(live, ShareConfig(groups=1), recover, progress=False)
    assert shared.meta["unique_parameters"] < live.meta["unique_parameters"]

    export(pruned)
    parity = pruned.export["parity"]
    assert parity["max_abs_diff"] <= 1e-4 and parity["agreement"] == 1.0 and parity["rows"] > len(task.dev)
    import onnx

    graph = onnx.load(str(pruned.path / "onnx" / "model.onnx")).graph
    assert [o.name for o in graph.output] == ["logits", "start_logits", "end_logits"]
    int8 = {mode: quantize(pruned, QuantizeConfig(mode=mode)) for mode in ("dynamic", "static")}
    int8["qat"] = quantize(pruned, QuantizeConfig(qat_epochs=0.5))
    for variant in int8.values():
        assert set(variant.meta["metrics"]["dev"]) == {"qa_f1", "exact_match"}
        assert variant.meta["metrics"]["drop_points"] == pytest.approx(
            100 * (pruned.meta["metrics"]["dev"]["qa_f1"] - variant.meta["metrics"]["dev"]["qa_f1"]), abs=1e-3)
    for variant in (teacher, int8["dynamic"]):
        measured = bench(variant, [(1, 16)], threads=1, runs=30)
        assert set(next(iter(measured.benches.values()))["dev"]) == set(task.metrics)
    # the int8 artifact scored by bench, through ORT and the same decoding, gives what quantize measured on it
    assert next(iter(int8["dynamic"].benches.values()))["dev"] == int8["dynamic"].meta["metrics"]["dev"]

    code, out, err = run_cli("eval", pruned.path, "--data", root / "test.json")
    assert code == 0, err
    (recorded,) = Variant.load(pruned.path).evaluations
    assert recorded["scored_by"] == "onnx (model.onnx)" and recorded["kind"] == "question-answering"
    assert 0 <= recorded["metrics"]["qa_f1"] <= 1

    assert build(teacher.workspace, task.name)["metric"] == "QA F1 x 100"
    code, out, err = run_cli("--workspace", teacher.workspace, "report", "--task", task.name)
    assert code == 0, err


def test_onnx_scores_equal_pytorchs_on_the_dev_split(qa_teacher):
    """The exported graph's start and end logits decode to the same answers, so EM and F1 agree."""
    from compress.runtime import ort as runtime
    from compress.runtime.inference import predict_logits

    teacher, task, _ = qa_teacher
    export(teacher, optimize=False)
    tokenizer = load_tokenizer(teacher.path)
    dev = encode(task.dev, tokenizer, 32)
    torch_out = predict_logits(load_classifier(teacher.path), dev, tokenizer)
    ort_out = runtime.logits(runtime.session(teacher.path / "onnx" / "model.onnx"), dev, tokenizer)
    assert torch_out.shape == ort_out.shape == (len(dev), max(dev["length"]), 2) and len(dev) > len(task.dev)
    assert torch.equal(torch_out.isnan(), ort_out.isnan())
    labels = label_array(dev)
    assert task.scores(ort_out.numpy(), labels) == task.scores(torch_out.numpy(), labels)


def test_a_held_out_file_and_augmentation(qa_teacher, run_cli):
    teacher, task, root = qa_teacher
    rows = labelled_file(task, root / "test.json")
    assert len(rows) == 40 and task.kind.examples[rows[0]["label"]][0] == rows[0]["text_pair"]
    assert labelled_file(task, root / "qa" / "dev.json")["label"] == task.dev["label"]  # read again: same rows
    refused(run_cli, "eval", teacher.path, "--data", root / "qa" / "dev.json", message="holds the dev rows")
    with pytest.raises(UserError, match="--augment does not apply to question answering"):
        distill(teacher, task, DistillConfig(layers=1, augment=2), FAST, progress=False)


def test_a_student_learns_from_its_teachers_own_windows(qa_teacher):
    """Another --doc-stride makes other training windows: the teacher's outputs on them were never checked."""
    teacher, _, root = qa_teacher
    narrower = load_task(str(root / "qa"), doc_stride=5)
    with pytest.raises(UserError, match="fine-tuned with --doc-stride default, not 5: pass the teacher's"):
        distill(teacher, narrower, DistillConfig(layers=1), FAST, progress=False)


def test_a_recipe_and_a_search_run_a_reading_task(qa_teacher, run_cli, tiny_base, tmp_path):
    _, task, root = qa_teacher
    recipe_and_search(run_cli, tiny_base, tmp_path, task, root / "qa")


def test_a_family_without_a_reader_is_one_line(tmp_path):
    from transformers import GPT2Config

    from compress.model.checkpoint import model_class

    with pytest.raises(UserError, match="question answering takes bert, .* models, not gpt2"):
        model_class(GPT2Config(), "qa")


def test_a_question_too_long_for_its_window_is_one_line(tiny_base):
    from compress.data.tasks import _squad_rows

    kind, question, context = QuestionAnswering(), "where " * 30, "mary lives in rome"
    rows = _squad_rows([{"text": [question], "text_pair": [context], "answers": [["rome"]], "starts": [[14]],
                         "label": [kind.add(question, context, ["rome"])]}])
    with pytest.raises(UserError, match="a question leaves no room for its context in windows of 24 tokens"):
        encode(rows, load_tokenizer(tiny_base), 24)
