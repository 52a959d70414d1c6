"""The bundle manifest on disk: a typed record, read, checked, written atomically.

Kept free of torch and the models so that light modules (the registry) can check a bundle.
``ModelBundle`` writes the manifest (``ModelBundle.manifest``); ``read_manifest`` is its reader.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from mirec.errors import BundleMismatchError
from mirec.records import Record

BUNDLE_FORMAT = 1
MANIFEST = "manifest.json"


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class BundleManifest(Record):
    """``manifest.json``: what a bundle holds and how it was made.

    Attributes:
        bundle_format: the layout version (``BUNDLE_FORMAT``).
        created_at: ISO-8601 UTC time the bundle was saved.
        config: the resolved ``TrainConfig`` tree.
        metrics: the training run's metrics (``valid/...``, ``test/...``).
        data_fingerprint: fingerprint of the training data.
        vocab_size: N, the items the model knows.
        vocab_fingerprint: the vocabulary's fingerprint (checked against ``vocab.json``).
        dim: D.
        num_interests: K.
        index_metric: how items are scored (``inner_product``).
        package_versions: Python and the packages the bundle depends on.
        extra: lineage and the index step's facts (``extra["index"]``).
        files: file name -> sha256 of every file of the bundle.
    """

    bundle_format: Literal[1]
    created_at: str
    config: dict[str, Any]
    metrics: dict[str, float]
    data_fingerprint: str
    vocab_size: int
    vocab_fingerprint: str
    dim: int
    num_interests: int
    index_metric: str
    package_versions: dict[str, str]
    extra: dict[str, Any]
    files: dict[str, str]


def read_manifest(directory: Path) -> BundleManifest:
    """Read and check ``manifest.json``: its format, then every field (named when bad)."""
    path = directory / MANIFEST
    if not path.is_file():
        raise BundleMismatchError(f"bundle {directory}: {MANIFEST} is missing")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleMismatchError(f"bundle {directory}: {MANIFEST} is corrupt: {exc}") from exc
    fmt = raw.get("bundle_format") if isinstance(raw, dict) else None
    if fmt != BUNDLE_FORMAT:
        raise BundleMismatchError(
            f"bundle {directory}: bundle_format {fmt!r} is not supported (expected {BUNDLE_FORMAT})"
        )
    return BundleManifest.parse(raw, f"bundle {directory}: {MANIFEST}", BundleMismatchError)


def verify_files(
    directory: Path, manifest: BundleManifest, names: Iterable[str] | None = None
) -> None:
    """Check that files of the bundle exist with the checksums the manifest records.

    Args:
        directory: the bundle directory.
        manifest: its manifest.
        names: the files to check, each of which the manifest must list (a loader that reads
            only some files checks those); None checks every listed file.

    Raises:
        BundleMismatchError: a file is not listed, missing or corrupt.
    """
    for name in manifest.files if names is None else names:
        expected = manifest.files.get(name)
        if expected is None:
            raise BundleMismatchError(f"bundle {directory}: file {name} is not in the manifest")
        path = directory / name
        if not path.is_file():
            raise BundleMismatchError(f"bundle {directory}: file {name} is missing")
        if file_sha256(path) != expected:
            raise BundleMismatchError(f"bundle {directory}: file {name} is corrupt (checksum)")


def write_manifest(directory: Path, manifest: BundleManifest) -> None:
    """Write the manifest atomically (temp file, then rename)."""
    manifest.write(directory / MANIFEST)
