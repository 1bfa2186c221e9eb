"""The variant: a folder with a loadable checkpoint and variant.json, the unit every stage passes on.

Variants live in a workspace (compress.workspace says where and how they are written): a teacher
at teachers/<teacher>/<task>/, everything made from it at students/<teacher>/<task>/<name>/.
A variant's parent is recorded relative to the workspace, so lineage survives moving the
workspace and does not depend on where the command was typed. variant.json is the stage's own
record, written once; later stages add files of their own beside it (onnx/export.json,
bench/<machine key>.json, recipe.json), so nothing rewrites a record another process may be reading.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path

from compress.configs import MAX_SEQUENCE
from compress.errors import UserError, as_path, says_disk_full
from compress.kinds import KINDS, MAIN_METRICS, kind_of, main_of
from compress.workspace import (
    EXPORT_FILE,
    MADE_BY,
    META_FILE,
    ONNX_DIR,
    atomic_dir,
    check_name,
    clean_stale,
    inside,
    locked,
    own_folder,
    workspace_of,
    write_json,
)

SCHEMA = 1  # 1: made_by mark, parents relative to the workspace, measurements in bench/, export in onnx/
BENCH_DIR, EVAL_DIR, RECIPE_FILE = "bench", "eval", "recipe.json"


def main_metric(dev: dict) -> str:
    """The name of the metric `dev` (a split's metrics, as a stage or bench records them) is judged by:
    retention, the report's axis and the search's drop use it. Each task kind names its own
    (compress.kinds): MCC for CoLA, accuracy for other classifiers, Spearman for regression."""
    return main_of([name for name, value in dev.items() if isinstance(value, (int, float))])


def retention(dev: dict, teacher_dev: dict) -> float | None:
    """The student's main metric over the teacher's (None where the teacher scores 0 or less: no ratio)."""
    name = main_metric(teacher_dev)
    return dev[name] / teacher_dev[name] if teacher_dev[name] > 0 else None


def _record_problem(meta) -> str | None:
    """What makes `meta` unusable as a variant record, or None."""
    if not isinstance(meta, dict):
        return f"it holds a {type(meta).__name__}, not an object"
    for key in ("name", "stage", "task"):
        if not isinstance(meta.get(key), str):
            return f"'{key}' is missing or not a string"
    for outer, inner, kind in (("metrics", "dev", dict), ("params", "max_length", int)):
        value = meta.get(outer, {}).get(inner) if isinstance(meta.get(outer), dict) else None
        if not isinstance(value, kind):
            return f"'{outer}.{inner}' is missing"
    kind = KINDS.get((meta.get("data") if isinstance(meta.get("data"), dict) else {}).get("kind", "classification"))
    if kind is None:
        return f"'data.kind' is not a task kind ({', '.join(KINDS)})"
    if not isinstance(meta["metrics"]["dev"].get(kind.headline), (int, float)):
        return f"'metrics.dev.{kind.headline}' is missing"
    if not 1 <= meta["params"]["max_length"] <= MAX_SEQUENCE:
        return f"'params.max_length' is not a length from 1 to {MAX_SEQUENCE}"
    number, text = (int, float, type(None)), (str, type(None))
    for key, kinds in (("parent", text), ("teacher", text), ("num_labels", (int, type(None))), ("data", dict),
                       ("parameters", (int, type(None))), ("unique_parameters", (int, type(None))),
                       ("size_mb", number), ("command", str), ("schema", int)):
        if (key in meta and not isinstance(meta[key], kinds)) or isinstance(meta.get(key), bool):
            return f"'{key}' has the wrong type ({type(meta[key]).__name__})"
    if not isinstance(meta.get("data", {}).get("spec", {}), dict):
        return "'data.spec' is not an object"
    parent = meta.get("parent")
    if meta.get("schema", 0) >= 1 and parent and (Path(parent).is_absolute() or ".." in Path(parent).parts):
        return f"'parent' {parent} is not a place inside the workspace"
    return None


def _bench_problem(entry: dict) -> str | None:
    """What makes a bench/*.json entry unusable, or None."""
    latency = entry.get("latency_ms")
    if not isinstance(latency, dict) or not all(
            isinstance(shapes, dict) and all(isinstance(t, dict) and isinstance(t.get("p50"), (int, float))
                                             and isinstance(t.get("p90"), (int, float)) for t in shapes.values())
            for shapes in latency.values()):
        return "'latency_ms' is not runtime -> shape -> {p50, p90}"
    if not isinstance(entry.get("dev"), dict) or not any(isinstance(entry["dev"].get(m), (int, float))
                                                         for m in MAIN_METRICS):
        return f"'dev' holds none of {', '.join(MAIN_METRICS)}"
    if not isinstance(entry.get("machine"), dict) or not isinstance(entry.get("accuracy_from"), str):
        return "'machine' or 'accuracy_from' is missing"
    return None


@dataclass
class Record:
    """variant.json, typed: what every stage writes about the variant it made.

    Keys a stage adds beyond these (the pruned structure, the sharing, the training run, the
    artifact, the recipe stamp) stay in `extra` and are written back as they came. Records of
    schema 0 (no made_by mark, parents as typed, measurements inside) load too.
    """

    name: str
    stage: str
    task: str
    params: dict
    metrics: dict
    parent: str | None = None  # the parent's place in the workspace, e.g. teachers/minilm-l6/sst2
    teacher: str | None = None
    num_labels: int | None = None
    data: dict = field(default_factory=dict)  # source, load spec, fingerprint, sizes
    parameters: int | None = None
    unique_parameters: int | None = None  # tied (shared) tensors counted once
    size_mb: float | None = None
    machine: dict = field(default_factory=dict)
    command: str = ""
    made_by: str | None = None
    schema: int = 0
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data) -> "Record":
        """The record in `data`; ValueError names what is missing."""
        problem = _record_problem(data)
        if problem:
            raise ValueError(problem)
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in data.items() if k in known},
                   extra={k: v for k, v in data.items() if k not in known})

    def to_json(self) -> dict:
        return {**{f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}, **self.extra}

    @staticmethod
    def derived(parent: "Variant", **given) -> dict:
        """The record of a variant made from `parent`, as variant.json holds it before its stage's writer
        adds the size, machine and command: its lineage (the parent's place in the workspace, and the
        teacher, task, labels and data it carries on) and the stage's `given` keys, which win."""
        return {"parent": relative_to_workspace(parent), "teacher": parent.record.teacher or parent.record.name,
                "task": parent.record.task, "num_labels": parent.record.num_labels, "data": parent.record.data,
                **given}

    @property
    def max_length(self) -> int:
        return self.params["max_length"]

    @property
    def accuracy(self) -> float:
        """Dev accuracy as the stage measured it (the artifact's, for a quantized variant)."""
        return self.metrics["dev"]["accuracy"]

    @property
    def kind(self):
        """The task kind (compress.kinds) the variant was trained for."""
        return kind_of(self.to_json())

    @property
    def headline(self) -> tuple[str, float]:
        """The kind's headline dev metric, by name, as the stage measured it: what a console line shows."""
        return self.kind.headline, self.metrics["dev"][self.kind.headline]

    @property
    def score(self) -> float:
        """The task's main dev metric as the stage measured it: what retention and drops compare."""
        return self.metrics["dev"][main_metric(self.metrics["dev"])]


@dataclass
class Variant:
    path: Path
    record: Record

    @classmethod
    def load(cls, path: Path | str) -> "Variant":
        path = Path(path)
        meta_file = path / META_FILE
        if not meta_file.is_file():
            raise UserError(f"{path} is not a variant: no {META_FILE}")
        try:
            return cls(path, Record.from_json(json.loads(meta_file.read_text())))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{meta_file} is corrupt: {exc}") from None
        except ValueError as exc:
            raise UserError(f"{meta_file} is not a variant record: {exc}") from None

    @property
    def made(self) -> str:
        """A digest of the record its stage wrote, once: which run made this model (a teacher fine-tuned
        again gets another), for what is built on it to follow."""
        return hashlib.sha256((self.path / META_FILE).read_bytes()).hexdigest()[:16]

    @property
    def meta(self) -> dict:
        """The record as variant.json holds it (a copy: a record is written once, by its stage)."""
        return self.record.to_json()

    @property
    def is_quantized(self) -> bool:
        return self.record.stage == "quantize"

    @property
    def workspace(self) -> Path:
        """The workspace this variant lies in (an error if it lies in none)."""
        return workspace_of(self.path, teacher=self.record.stage == "teacher")

    @property
    def recipe_stamp(self) -> dict | None:
        """What `compress run` stamped on this output: recipe.json (records of schema 0 held it inside)."""
        stamp = _read_json(self.path / RECIPE_FILE) or self.record.extra.get("recipe")
        return stamp if isinstance(stamp, dict) else None

    def stamp_recipe(self, stamp: dict) -> None:
        """Record which recipe stage made this output, in a file of its own beside the record."""
        write_json(inside(self.workspace, self.path / RECIPE_FILE), stamp)

    @property
    def export(self) -> dict | None:
        """The ONNX export's record: onnx/export.json (records of schema 0 held it in variant.json).

        A record without a numeric size (a hand-edited or foreign file) counts as no export."""
        record = _read_json(self.path / ONNX_DIR / EXPORT_FILE) or self.record.extra.get("onnx")
        return record if isinstance(record, dict) and isinstance(record.get("size_mb"), (int, float)) else None

    @cached_property
    def benches(self) -> dict[str, dict]:
        """Measurements by machine key: bench/<key>.json (records of schema 0 held them in variant.json).

        An unreadable or malformed file is named on stderr and left out."""
        old = self.record.extra.get("bench", {})
        found = {key: entry for key, entry in (old.items() if isinstance(old, dict) else ())
                 if isinstance(entry, dict) and not _bench_problem(entry)}
        for f in sorted((self.path / BENCH_DIR).glob("*.json")):
            entry = _read_json(f)
            problem = "not a JSON object with a key" if not entry or not isinstance(entry.get("key"), str) \
                else _bench_problem(entry)
            if problem:
                print(f"compress: warning: skipping {f}: {problem}", file=sys.stderr)
            else:
                found[entry["key"]] = entry
        return found

    @property
    def evaluations(self) -> list[dict]:
        """What `compress eval` measured on other labelled files (eval/*.json), the latest last; an
        unreadable file is left out."""
        found = [_read_json(f) for f in sorted((self.path / EVAL_DIR).glob("*.json"))]
        found = [e for e in found if e and isinstance(e.get("metrics"), dict) and isinstance(e.get("file"), str)]
        return sorted(found, key=lambda e: str(e.get("measured_at")))

    def record_bench(self, key: str, entry: dict) -> "Variant":
        """Add one measurement to this machine key's file of its own (concurrent keys never meet).

        Measurements accumulate: a shape and runtime measured again replaces its figure, which moves
        to the file's `history`; every other shape, runtime and key stays as it was."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", key).strip("-.")[:80]
        folder = own_folder(self.workspace, self.path, BENCH_DIR)
        clean_stale(self.path)  # what a killed writer left beside the record
        path = folder / f"{slug}-{hashlib.sha1(key.encode()).hexdigest()[:8]}.json"
        with locked(folder):  # two benches of one key merge in turn
            earlier = _read_json(path)
            if earlier is None or earlier.get("key") != key or _bench_problem(earlier):
                earlier = None
            write_json(path, {"key": key, **merge_bench(earlier, entry)})
        self.__dict__.pop("benches", None)  # read again on the next look
        return self


def merge_bench(earlier: dict | None, entry: dict) -> dict:
    """`entry` added to the `earlier` measurement of the same key: its shapes and runtimes replace theirs
    (kept in `history` with when they were measured), the rest of `earlier` stays."""
    if earlier is None:
        return {**entry, "history": []}
    latency = {runtime: dict(shapes) for runtime, shapes in earlier["latency_ms"].items()}
    history = list(earlier.get("history", []))
    for runtime, shapes in entry["latency_ms"].items():
        for shape, timing in shapes.items():
            if shape in latency.get(runtime, {}):
                history.append({"runtime": runtime, "shape": shape, **latency[runtime][shape]})
            latency.setdefault(runtime, {})[shape] = timing
    if earlier.get("dev") != entry["dev"]:
        history.append({"dev": earlier["dev"], "accuracy_from": earlier["accuracy_from"],
                        "measured_at": earlier.get("measured_at")})
    return {**earlier, **entry, "latency_ms": latency, "history": history}


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def as_variant(value, what: str = "variant") -> Variant:
    """A stage's input: a Variant, or (through the API) the path of its folder as a str or Path."""
    if isinstance(value, Variant):
        return value
    if isinstance(value, (str, os.PathLike)):
        return Variant.load(value)
    raise UserError(f"{what} must be a Variant or the path of its folder, not {type(value).__name__}")


def derived_dir(parent: Variant, name: str) -> Path:
    """Where a variant made from `parent` goes: students/<teacher>/<task>/<name>/, beside its siblings.

    `name` must be one path component, the folder must lie in the parent's workspace, and it may
    not be the parent itself.
    """
    check_name(name)
    workspace = parent.workspace
    if parent.record.stage == "teacher":
        folder = workspace / "students" / check_name(parent.record.name, "teacher name") / check_name(
            parent.record.task, "task name")
    else:
        folder = parent.path.parent
    target = inside(workspace, folder / name)
    if target.resolve() == parent.path.resolve():
        raise UserError(f"--name {name} is the name of the variant it is made from: choose another")
    return target


def relative_to_workspace(variant: Variant) -> str:
    """How a record names another variant: its path inside their workspace."""
    return str(Path(os.path.abspath(variant.path)).relative_to(variant.workspace))


def parent_path(variant: Variant) -> Path | None:
    """The folder of `variant`'s parent, in `variant`'s own workspace: lineage never leaves it.

    Records of schema 0 named parents as typed (absolute or cwd-relative): their place is found by
    its tail (teachers/<t>/<task> or students/<t>/<task>/<v>), so a moved workspace keeps its lineage.
    """
    recorded = variant.record.parent
    if not recorded:
        return None
    place = Path(recorded)
    if place.is_absolute() or ".." in place.parts:
        place = _place_in_a_workspace(place)
    if place is None:
        raise UserError(f"{variant.path / META_FILE} names a parent outside its workspace: {recorded}")
    return inside(variant.workspace, variant.workspace / place)


def _place_in_a_workspace(path: Path) -> Path | None:
    """teachers/<t>/<task> or students/<t>/<task>/<v> at the end of `path`, or None."""
    parts = path.parts
    for folder, depth in (("teachers", 3), ("students", 4)):
        if len(parts) >= depth and parts[-depth] == folder:
            return Path(*parts[-depth:])
    return None


def teacher_of(variant: Variant) -> Variant:
    """The teacher a variant descends from: teachers/<teacher>/<task> of its own workspace."""
    if variant.record.stage == "teacher":
        return variant
    teacher = variant.record.teacher
    if not isinstance(teacher, str):
        raise UserError(f"{variant.path / META_FILE} does not name its teacher")
    path = variant.workspace / "teachers" / check_name(teacher, "teacher") / variant.record.task
    if not (path / META_FILE).is_file():
        raise UserError(f"{variant.path} descends from teacher {teacher}, which is not at {path}")
    return Variant.load(path)


def scan(workspace: Path, teacher: str | None = None, task: str | None = None
         ) -> tuple[list[Variant], list[tuple[Path, str]]]:
    """Every variant in the workspace, and the folders whose record is broken with the reason.

    Hidden (temporary, partial, set-aside) folders are skipped.
    """
    workspace = as_path(workspace, "workspace")
    teacher, task = teacher or "*", task or "*"
    files = sorted((workspace / "teachers").glob(f"{teacher}/{task}/{META_FILE}"))
    files += sorted((workspace / "students").glob(f"{teacher}/{task}/*/{META_FILE}"))
    variants, broken = [], []
    for f in files:
        if any(part.startswith(".") for part in f.parent.relative_to(workspace).parts):
            continue
        try:
            variant = Variant.load(f.parent)
            parent_path(variant)  # lies in this workspace, reached through no link, as its parent does
            variants.append(variant)
        except UserError as exc:
            broken.append((f.parent, str(exc)))
    return variants, broken


def find_variants(workspace: Path, teacher: str | None = None, task: str | None = None) -> list[Variant]:
    """Every valid variant in the workspace; each broken one is named on stderr and skipped."""
    variants, broken = scan(workspace, teacher, task)
    for path, reason in broken:
        print(f"compress: warning: skipping {path}: {reason}", file=sys.stderr)
    return variants


def write_record(folder: Path, meta: dict) -> Variant:
    """Write a new variant's record, with compress's mark, the machine and the command that made it."""
    from compress.machine import machine

    variant = Variant(folder, Record.from_json({**meta, "schema": SCHEMA, "made_by": MADE_BY, "machine": machine(),
                                                "command": command_line()}))
    write_json(folder / META_FILE, variant.meta)
    return variant


def save_variant(target: Path, model, tokenizer, meta: dict, replace: bool = False,
                 reads: tuple[Path, ...] = ()) -> Variant:
    """Write checkpoint, tokenizer and variant.json (plus size, machine and command) atomically.

    An existing `target` is replaced only with `replace` (see workspace.atomic_dir).
    """
    from compress import distributed
    from compress.model import structure

    if not distributed.is_main():  # under torchrun only rank 0 writes; the others read its result
        distributed.barrier()
        return Variant.load(target)
    try:
        with atomic_dir(target, replace, reads) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            if structure.is_structured(model.config):  # loadable with trust_remote_code
                shutil.copyfile(structure.__file__, tmp / structure.MODELING_FILE)
            record = write_record(tmp, {
                **meta,
                "parameters": sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False)),
                "unique_parameters": unique_parameters(model),
                "size_mb": round(folder_size_mb(tmp), 2),
            }).record
    except Exception as exc:  # noqa: BLE001 - safetensors reports a full disk as its own error type, errno in words
        if isinstance(exc, UserError) or not says_disk_full(exc):
            raise
        raise UserError(f"the disk holding {target.parent} is full: {target.name} did not fit; free space, then "
                        "run the same command again") from None
    distributed.barrier()
    return Variant(target, record)


def unique_parameters(model) -> int:
    """Parameters counted once per storage: tied (shared) tensors count once."""
    seen, total = set(), 0
    for _, p in model.named_parameters(remove_duplicate=False):
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel()
    return total


def command_line() -> str:
    """The command that made a variant, as the user typed it."""
    return shlex.join(["compress", *sys.argv[1:]])


def folder_size_mb(path: Path, pattern: str = "*.safetensors") -> float:
    return sum(f.stat().st_size for f in path.glob(pattern)) / 1e6
