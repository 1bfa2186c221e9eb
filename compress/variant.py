"""The variant: a folder with a loadable checkpoint and variant.json, the unit every stage passes on.

Folders are written under a temporary name and renamed when complete, so a crash or bad input
never leaves a half-written variant behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from compress.errors import UserError

META_FILE = "variant.json"


@dataclass
class Variant:
    path: Path
    meta: dict

    @classmethod
    def load(cls, path: Path | str) -> "Variant":
        path = Path(path)
        meta_file = path / META_FILE
        if not meta_file.is_file():
            raise UserError(f"{path} is not a variant: no {META_FILE}")
        try:
            meta = json.loads(meta_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{meta_file} is corrupt: {exc}") from None
        return cls(path, meta)

    def save_meta(self) -> None:
        write_json(self.path / META_FILE, self.meta)


def derived_dir(parent: Variant, name: str) -> Path:
    """Where a variant made from `parent` goes: students/<teacher>/<task>/<name>/, beside its siblings."""
    if parent.meta.get("stage") == "teacher":  # teachers/<teacher>/<task> -> the workspace
        return parent.path.parents[2] / "students" / parent.meta["name"] / parent.meta["task"] / name
    return parent.path.parent / name


def teacher_of(variant: Variant) -> Variant:
    """The teacher a variant descends from: teachers/<teacher>/<task> of its own workspace."""
    if variant.meta.get("stage") == "teacher":
        return variant
    workspace = variant.path.resolve().parents[3]  # students/<teacher>/<task>/<name>
    path = workspace / "teachers" / variant.meta["teacher"] / variant.meta["task"]
    if not (path / META_FILE).is_file():
        raise UserError(f"{variant.path} descends from teacher {variant.meta['teacher']}, which is not at {path}")
    return Variant.load(path)


def find_variants(workspace: Path, teacher: str | None = None, task: str | None = None) -> list[Variant]:
    """Every complete variant in the workspace (temporary and partial folders are skipped)."""
    teacher, task = teacher or "*", task or "*"
    files = sorted((workspace / "teachers").glob(f"{teacher}/{task}/{META_FILE}"))
    files += sorted((workspace / "students").glob(f"{teacher}/{task}/*/{META_FILE}"))
    return [Variant.load(f.parent) for f in files if not f.parent.name.startswith(".")]


def write_json(path: Path, data) -> None:
    """Write JSON through a temporary file and an atomic rename."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(folder: Path):
    """An exclusive lock on `folder` across processes, held only while a variant is swapped in.

    flock on the folder itself: no lock file is left in the workspace.
    """
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def atomic_dir(target: Path):
    """Yield a temporary sibling of `target`; rename it to `target` only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()
    try:
        yield tmp
        with _locked(target.parent):  # another process may be replacing the same variant
            if target.exists():
                shutil.rmtree(target)
            os.rename(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def save_variant(target: Path, model, tokenizer, meta: dict) -> Variant:
    """Write checkpoint, tokenizer and variant.json (plus size, machine and command) atomically."""
    from compress import distributed, structure
    from compress.machine import machine

    if not distributed.is_main():  # under torchrun only rank 0 writes; the others read its result
        distributed.barrier()
        return Variant.load(target)
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if structure.is_structured(model.config):  # loadable with trust_remote_code
            shutil.copyfile(structure.__file__, tmp / structure.MODELING_FILE)
        meta = {
            **meta,
            "parameters": sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False)),
            "unique_parameters": unique_parameters(model),
            "size_mb": round(folder_size_mb(tmp), 2),
            "machine": machine(),
            "command": command_line(),
        }
        Variant(tmp, meta).save_meta()
    distributed.barrier()
    return Variant(target, meta)


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
