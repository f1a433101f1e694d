"""The load cache of a Minari dataset: its checked TED tensors beside it, as memory-mapped files.

:func:`~torchrl_o3f.data.load_offline_dataset` reads a dataset's HDF5 files once, checks them,
and keeps the TED tensors in ``<dataset>/o3f_cache`` with a manifest of every file's size and
sha256 and a stamp of the dataset's own files; later loads read the cache when the stamp still
matches and every file is whole, and fall back to the dataset (rewriting the cache) otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDict

from torchrl_o3f._atomic import (
    disk_full_error,
    file_sha256,
    remove_stale_temporaries,
    temporary_tag,
)

__all__ = ["CACHE_DIR", "cache_stamp", "read_cache", "write_cache"]

CACHE_DIR = "o3f_cache"
CACHE_FORMAT = 2  # 2: a manifest with the sha256 of every file


def cache_stamp(folder: Path) -> dict:
    """What identifies the dataset's files: sizes and modification times."""
    out = {"format": CACHE_FORMAT}
    data = folder / "data"
    if data.is_dir():
        for f in sorted(data.iterdir()):
            if f.is_file():
                st = f.stat()
                out[f.name] = [st.st_size, st.st_mtime_ns]
    return out


class _DamagedCache(Exception):
    pass


def read_cache(folder: Path, stamp: dict, dataset_id: str, memmap_prefix) -> TensorDict | None:
    """The cached tensors (a RAM copy, or a copy into ``memmap_prefix``), or ``None``.

    ``None`` when there is no cache or it is stale (the dataset's files changed); a damaged
    one (a file missing, truncated or not matching its recorded sha256) is also ``None``,
    with a warning naming the file.
    """
    path = folder / CACHE_DIR
    remove_stale_temporaries(folder, prefixes=(".o3f-cache-",))
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):  # no cache, or one of an older format
        return None
    if manifest.get("stamp") != stamp:
        return None
    files: dict = manifest.get("files", {})
    try:
        found = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
        missing = sorted(set(files) - found)
        if missing:
            raise _DamagedCache(missing[0], "missing")
        for rel, (size, digest) in files.items():
            if rel.endswith(".memmap") and memmap_prefix is None:
                continue  # hashed below, as it is read
            full = path / rel
            if full.stat().st_size != size:
                raise _DamagedCache(rel, f"{full.stat().st_size} bytes, {size} written")
            if file_sha256(full) != digest:
                raise _DamagedCache(rel, "sha256 mismatch")
        cached = TensorDict.load_memmap(path / "td")
        if memmap_prefix is not None:
            return cached.memmap(memmap_prefix, copy_existing=True)
        return cached.apply(lambda t: _read_into_ram(t, path, files))
    except _DamagedCache as err:
        rel, why = err.args
        warnings.warn(
            f"the load cache of {dataset_id!r} is damaged ({path / rel}: {why}); reading the "
            "dataset's own files instead and rewriting the cache",
            stacklevel=3,
        )
    except Exception as err:  # an unreadable layout: read the dataset itself
        warnings.warn(
            f"the load cache of {dataset_id!r} in {path} is unreadable ({err}); reading the "
            "dataset's own files instead and rewriting the cache",
            stacklevel=3,
        )
    return None


def _read_into_ram(t: torch.Tensor, cache: Path, files: dict) -> torch.Tensor:
    # a plain read of the file: copying through the mapping would also count the mapped
    # pages in the process's resident memory, doubling the peak; the bytes read are hashed
    filename = getattr(t, "filename", None)
    if filename is None:
        raise _DamagedCache(str(t.shape), "a tensor without a file")
    rel = Path(filename).resolve().relative_to(cache.resolve()).as_posix()
    if rel not in files:
        raise _DamagedCache(rel, "not in the manifest")
    size, digest = files[rel]
    dtype = torch.empty(0, dtype=t.dtype).numpy().dtype
    flat = np.fromfile(filename, dtype=np.uint8)
    if flat.size != size or size != t.numel() * dtype.itemsize:
        raise _DamagedCache(rel, f"{flat.size} bytes, {size} written")
    if hashlib.sha256(memoryview(flat)).hexdigest() != digest:
        raise _DamagedCache(rel, "sha256 mismatch")
    return torch.from_numpy(flat.view(dtype).reshape(tuple(t.shape)))


def write_cache(folder: Path, stamp: dict, td: TensorDict) -> None:
    """Keep ``td`` as memory-mapped files in ``<folder>/o3f_cache`` with a sha256 manifest.

    Written to a temporary folder and renamed into place; a read-only folder or a full disk
    leaves no cache and a warning.
    """
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".o3f-cache-{temporary_tag()}", dir=folder))
        try:
            td.memmap(tmp / "td", copy_existing=True)
            files = {
                p.relative_to(tmp).as_posix(): [p.stat().st_size, file_sha256(p)]
                for p in sorted((tmp / "td").rglob("*"))
                if p.is_file()
            }
            manifest = {"stamp": stamp, "files": files}
            (tmp / "manifest.json").write_text(json.dumps(manifest))
            shutil.rmtree(folder / CACHE_DIR, ignore_errors=True)
            os.replace(tmp, folder / CACHE_DIR)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as err:  # a read-only dataset folder or a full disk: no cache, no harm
        err = disk_full_error(err, folder / CACHE_DIR) or err
        warnings.warn(f"could not cache the loaded dataset in {folder}: {err}", stacklevel=3)
