"""Compile the retraining pipeline to KFP IR YAML: ``python -m pipelines.compile --out FILE``.

Two compile-time settings:

- the component image: ``$MIREC_COMPONENT_IMAGE`` when the components are imported, or
  ``image=`` here, which rewrites every executor's image in the compiled spec;
- the shared volume: ``pvc=`` mounts an existing PersistentVolumeClaim into every step at
  ``mount_path`` (the event log, the model registry and BentoML's store live there on a
  cluster). It writes the same platform section ``kfp-kubernetes``' ``mount_pvc`` writes
  (the PVC name as ``constant``, which KFP backends old and new accept), without needing it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

DEFAULT_OUT = "retraining.yaml"
DEFAULT_MOUNT = "/mnt/mirec"


def set_image(spec: dict[str, Any], image: str) -> int:
    """Point every executor of a compiled pipeline spec at ``image``; returns how many."""
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    for executor in executors.values():
        executor["container"]["image"] = image
    return len(executors)


def volume_platform_spec(spec: dict[str, Any], pvc: str, mount_path: str) -> dict[str, Any]:
    """The Kubernetes platform section that mounts PVC ``pvc`` at ``mount_path`` in every step."""
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    mounts = {
        name: {"pvcMount": [{"mountPath": mount_path, "constant": pvc}]} for name in executors
    }
    return {"platforms": {"kubernetes": {"deploymentSpec": {"executors": mounts}}}}


def compile_pipeline(
    out: str | Path = DEFAULT_OUT,
    image: str | None = None,
    *,
    pvc: str | None = None,
    mount_path: str = DEFAULT_MOUNT,
) -> Path:
    """Write the retraining pipeline's IR YAML to ``out`` (and return the path).

    Args:
        out: the YAML file to write.
        image: the container image of every step; None keeps ``components.images.BASE_IMAGE``.
        pvc: an existing PersistentVolumeClaim to mount into every step, or None.
        mount_path: where the claim is mounted.
    """
    from kfp import compiler

    from pipelines.retraining import retraining

    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(retraining, str(path))
    if image or pvc:
        docs = list(yaml.safe_load_all(path.read_text()))
        if image:
            set_image(docs[0], image)
        if pvc:
            docs = [docs[0], volume_platform_spec(docs[0], pvc, mount_path)]
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=DEFAULT_OUT, help="YAML file to write")
    parser.add_argument(
        "--image", help="container image of every step (default: components.images)"
    )
    parser.add_argument("--pvc", help="PersistentVolumeClaim to mount into every step")
    parser.add_argument("--mount-path", default=DEFAULT_MOUNT, help="where the claim is mounted")
    args = parser.parse_args(argv)
    compile_pipeline(args.out, args.image, pvc=args.pvc, mount_path=args.mount_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
