"""Paths as URLs: a local path, `file://...` or `gs://bucket/...` (anything etils.epath reads,
the path type orbax uses) through one type, so that a run's workdir, checkpoints, metric stream
and data can live in a bucket that every host of a pod slice shares.

`as_path` is the one way genjax turns a user's string into a path; pathlib never sees a URL.
The metric stream also takes `memory://` (TensorStore's in-memory kvstore) through
`kvstore_url`; epath has no such scheme, so a workdir cannot be one.
"""

from __future__ import annotations

import os
import uuid

from etils import epath

Path = epath.Path
LOCAL_PREFIX = "file://"


class PathError(ValueError):
    """A path or URL genjax cannot use."""


def is_url(path: str | os.PathLike) -> bool:
    """True for a remote URL (`gs://...`); False for a local path or `file://`."""
    text = os.fspath(path)
    return "://" in text and not text.startswith(LOCAL_PREFIX)


def as_path(path: str | os.PathLike) -> epath.Path:
    """A local path (made absolute), `file://` (the same), or a URL epath knows (`gs://`)."""
    if isinstance(path, epath.Path) and is_url(path):
        return path
    text = os.fspath(path)
    if text.startswith(LOCAL_PREFIX):
        text = text[len(LOCAL_PREFIX):]
    if not is_url(text):
        return epath.Path(os.path.abspath(text))
    try:
        return epath.Path(text)
    except KeyError:
        scheme = text.split("://")[0]
        raise PathError(f"{text}: {scheme}:// paths are not supported here (use a local path, "
                        "file:// or gs://)") from None


def kvstore_url(path: str | os.PathLike) -> str:
    """A TensorStore kvstore URL with a trailing slash: `file://` + absolute path for local
    paths, URLs (`gs://`, `memory://`) as they are."""
    text = os.fspath(path)
    if text.startswith(LOCAL_PREFIX) or "://" not in text:
        text = LOCAL_PREFIX + str(as_path(text))
    return text.rstrip("/") + "/"


def write_atomic(path: epath.Path, data: str | bytes) -> None:
    """Writes so that a reader sees the old content or the new, never a part: a temporary
    file renamed over the target on local disk; one object upload (atomic already) on GCS."""
    raw = data.encode() if isinstance(data, str) else data
    if is_url(path):
        path.write_bytes(raw)
        return
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(raw)
    os.replace(tmp, path)


def copytree(src: epath.Path, dst: epath.Path) -> None:
    """Copies every file under `src` to the same place under `dst` (local or remote)."""
    for f in files_under(src):
        target = dst / str(f)[len(str(src)):].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        f.copy(target, overwrite=True)


def move(src: epath.Path, dst: epath.Path) -> None:
    """Moves a file or directory: a rename on local disk, copy then delete in a bucket (which
    has no directories to rename)."""
    if not is_url(src):
        os.replace(src, dst)
    elif src.is_dir():
        copytree(src, dst)
        src.rmtree()
    else:
        src.copy(dst, overwrite=True)
        src.unlink()


def files_under(path: epath.Path) -> list[epath.Path]:
    """Every file below `path` (recursively, by listing: the same on local disk and in a
    bucket); empty when it does not exist."""
    if not path.is_dir():
        return []
    out = []
    for p in path.iterdir():
        out += files_under(p) if p.is_dir() else [p]
    return out
