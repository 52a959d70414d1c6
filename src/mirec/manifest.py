"""The bundle manifest on disk: read, check, write atomically, verify file checksums.

Kept free of torch and the models so that light modules (the registry) can check a bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from mirec.errors import BundleMismatchError

BUNDLE_FORMAT = 1
MANIFEST = "manifest.json"


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(directory: Path) -> dict[str, Any]:
    """Read and sanity-check ``manifest.json``."""
    path = directory / MANIFEST
    if not path.is_file():
        raise BundleMismatchError(f"bundle {directory}: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleMismatchError(f"bundle {directory}: {MANIFEST} is corrupt: {exc}") from exc
    fmt = manifest.get("bundle_format") if isinstance(manifest, dict) else None
    if fmt != BUNDLE_FORMAT:
        raise BundleMismatchError(
            f"bundle {directory}: bundle_format {fmt!r} is not supported (expected {BUNDLE_FORMAT})"
        )
    return manifest


def verify_files(directory: Path, manifest: dict[str, Any]) -> None:
    """Check that every file listed in the manifest exists with the recorded checksum."""
    for name, expected in manifest.get("files", {}).items():
        path = directory / name
        if not path.is_file():
            raise BundleMismatchError(f"bundle {directory}: file {name} is missing")
        if file_sha256(path) != expected:
            raise BundleMismatchError(f"bundle {directory}: file {name} is corrupt (checksum)")


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest atomically (temp file, then rename)."""
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    os.replace(tmp, directory / MANIFEST)
