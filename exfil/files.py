"""Write outputs so that a crash never leaves a partial file looking complete.

Every output goes to a temporary name in the same folder and is renamed into place only once it
is whole (rename is atomic on one filesystem). Readers therefore see the old file or the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` if the block succeeds."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = final.with_name(f".{final.name}.partial-{os.getpid()}")
    try:
        yield temporary
        os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)


def writable_folder(folder: str | os.PathLike, what: str = "outputs", create: bool = True) -> Path:
    """`folder`, checked now (created if `create`), so that work which would end in a failed
    write fails before it starts: read-only, not a folder, no permission, no such folder."""
    from exfil.cli import UserError

    folder = Path(folder)
    if not create and not folder.is_dir():
        raise UserError(f"{folder}: no such folder for the {what} (create it first)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UserError(f"{folder}: cannot write the {what} there ({error.strerror})") from None
    return folder


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """np.save, atomically (and without np.save appending a second `.npy`)."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.save(handle, array)


def save_json(path: str | os.PathLike, obj: Any) -> None:
    """Pretty JSON, atomically."""
    save_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def sha256_file(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in blocks so large captures need no memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()
