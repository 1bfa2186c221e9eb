"""Where compress may write, and how: names, the workspace's bounds, atomic publishing, locks.

Every folder compress writes lies inside a workspace (teachers/, students/, reports/) under a
name that is one path component. It is built under a hidden temporary name and renamed into
place; an existing folder is replaced only when asked (--force), only if compress made it, and
never when the stage reads from it. The old folder is renamed aside and removed only once the
new one is in place. Temporary names carry the host and process id, so the next run removes
what a killed one left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import uuid
from pathlib import Path

from compress.errors import UserError

META_FILE = "variant.json"
MADE_BY = "compress"  # variant.json's `made_by`: the mark that lets --force replace a folder
ONNX_DIR, EXPORT_FILE = "onnx", "export.json"  # a variant's export, and the record that says compress made it

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
SCRATCH = re.compile(r"\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)-[0-9a-f]{8}\.(?:tmp|old)")


def check_name(name, what: str = "--name") -> str:
    """`name` if it is one safe path component; a '-' start is refused too: it reads as a flag."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UserError(f"{what} {name!r} is not a valid name: one folder name of letters, digits, '.', '_' "
                        "and '-', starting with a letter, digit or '_' (at most 100 characters)")
    return name


def inside(root: Path, path: Path) -> Path:
    """`path`, refused unless it lies strictly inside the workspace `root` with no link on the way.

    This is the write policy's one check (docs/cli.md, "Where compress writes"): every path compress
    writes to in a workspace passes through it before anything is made, and what it reads of a
    variant (its export, a teacher's caches) passes through it too. Links above `root` are the
    user's own layout (a whole workspace on a bigger disk); a link below it (`students/` pointing
    elsewhere, a variant folder pointing at another one) is refused, named as the user wrote it.
    """
    root, path = Path(root), Path(path)
    base, target = Path(os.path.abspath(root)), Path(os.path.abspath(path))
    if target == base or not target.is_relative_to(base):
        raise UserError(f"{path} lies outside the workspace {root}: compress writes only inside its workspace")
    step = base
    for part in target.relative_to(base).parts:
        step = step / part
        if step.is_symlink():
            raise UserError(f"{path}: {step.relative_to(base)} in the workspace {root} is a link, and compress "
                            "follows no link inside a workspace (to keep one on another disk, point "
                            "--workspace there)")
    if path.resolve() != base.resolve() / target.relative_to(base):  # a '..' after a link leads elsewhere
        raise UserError(f"{path} leads out of its place in the workspace {root} through a link")
    return path


def workspace_of(variant_path: Path, teacher: bool) -> Path:
    """The workspace a variant folder lies in, from its place: teachers/<t>/<task> or students/<t>/<task>/<v>.

    Whether it is a teacher comes from its record: folder names alone are ambiguous (a teacher
    may be called "teachers", a workspace "students"). The place is read from the path as given,
    not resolved, so a link inside the workspace is refused rather than followed elsewhere.
    """
    path = Path(os.path.abspath(variant_path))
    depth, folder = (2, "teachers") if teacher else (3, "students")
    if len(path.parents) > depth and path.parents[depth - 1].name == folder:
        workspace = path.parents[depth]
        inside(workspace, Path(variant_path))
        return workspace
    raise UserError(f"{variant_path} is not in a workspace: variants live in teachers/<teacher>/<task>/ "
                    "or students/<teacher>/<task>/<variant>/")


def named_file(workspace: Path, path: Path) -> Path:
    """A file the user named outright (`report --out`): inside the workspace as `inside` allows, or
    anywhere else into a folder that already exists. Outside the workspace compress makes no folder
    and writes no link, nor reaches back into the workspace through one."""
    path = Path(path)
    if Path(os.path.abspath(path)).is_relative_to(os.path.abspath(workspace)):
        return inside(workspace, path)
    if path.is_symlink():
        raise UserError(f"{path} is a link: compress writes no file through a link")
    if not path.parent.is_dir():
        raise UserError(f"{path}: the folder {path.parent} does not exist, and compress makes folders only inside "
                        f"its workspace ({workspace})")
    if path.resolve().is_relative_to(Path(workspace).resolve()):
        raise UserError(f"{path} leads into the workspace {workspace} through a link")
    return path


def partial_dir(target: Path) -> Path:
    """Where a stage writing `target` keeps its resumable checkpoints (hidden: no name can clash)."""
    return target.with_name(f".{target.name}.partial")


def scratch_path(target: Path, kind: str = "tmp") -> Path:
    """A hidden sibling of `target` that names this host and process, so a later run can tell it is stale."""
    return target.with_name(f".{target.name}.{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.{kind}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(folder: Path) -> list[Path]:
    """Remove the temporary files and folders that dead processes of this host left in `folder`."""
    removed = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in folder.iterdir():
            match = SCRATCH.fullmatch(entry.name)
            if match and match["host"] == HOST and int(match["pid"]) != os.getpid() and not _alive(int(match["pid"])):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


def write_text(path: Path, text: str) -> None:
    """Write through a temporary file and an atomic rename; a failed write leaves nothing behind."""
    clean_stale(path.parent)
    tmp = scratch_path(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def locked(folder: Path):
    """An exclusive lock on `folder` across processes (flock on the folder: no lock file is left)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def made_by_compress(folder: Path) -> bool:
    """A variant folder whose record carries compress's mark, or the onnx/ folder of one."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    if folder.name == ONNX_DIR and not (folder / META_FILE).exists():  # schema 0 recorded it in variant.json
        return made_by_compress(folder.parent) and ((folder / EXPORT_FILE).is_file() or _records_export(folder.parent))
    try:
        record = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("made_by") == MADE_BY


def _records_export(variant_folder: Path) -> bool:
    try:
        return "onnx" in json.loads((variant_folder / META_FILE).read_text())
    except (OSError, ValueError, TypeError):
        return False


def own_folder(workspace: Path, parent: Path, name: str) -> Path:
    """`parent`/`name` in `workspace`, made if missing: a variant's own sub-folder (bench/, soft_targets/).

    Checked before it is made: neither it nor any folder above it in the workspace may be a link."""
    folder = inside(workspace, parent / name)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file, not a folder of its own: compress will not write through it")
    folder.mkdir(exist_ok=True)
    return folder


def check_target(target: Path, replace: bool = False, reads: tuple[Path, ...] = ()) -> None:
    """Refuse, before any work, an existing `target` that may not be replaced (see atomic_dir)."""
    if not isinstance(replace, bool):  # the API's replace='no' is truthy: it would replace
        raise UserError(f"replace must be True or False, not {replace!r:.60}")
    if not (target.exists() or target.is_symlink()):
        return
    if not replace:
        raise UserError(f"{target} exists; --force replaces it")
    resolved = target.resolve()
    for source in reads:
        if source.resolve().is_relative_to(resolved):
            raise UserError(f"refusing to replace {target}: this stage reads from {source}")
    if not made_by_compress(target):
        raise UserError(f"refusing to replace {target}: compress did not make it (no made_by mark in its "
                        f"{META_FILE}); move it away yourself")


@contextlib.contextmanager
def atomic_dir(target: Path, replace: bool = False, reads: tuple[Path, ...] = ()):
    """Yield a hidden temporary sibling of `target`; put it in place of `target` only if the block succeeds.

    An existing `target` is replaced only with `replace`, only if compress made it, and never if
    it is or holds one of `reads` (the stage's input). It is renamed aside under the lock and
    removed only after the new folder is in place.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target.parent)
    check_target(target, replace, reads)  # fail before the work, not only after it
    tmp, aside = scratch_path(target), None
    tmp.mkdir()
    try:
        yield tmp
        with locked(target.parent):  # another process may be writing the same variant
            if target.exists() or target.is_symlink():
                check_target(target, replace, reads)
                aside = scratch_path(target, "old")
                os.rename(target, aside)
            try:
                os.rename(tmp, target)
            except OSError:
                if aside is not None:
                    os.rename(aside, target)
                    aside = None
                raise
    finally:
        for leftover in (tmp, aside):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
