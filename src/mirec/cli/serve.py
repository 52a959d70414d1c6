"""``mirec serve``: the BentoML entry service over the registry's production model, on 127.0.0.1.

The services live in the top-level ``serving/`` folder (adapters nothing in ``mirec`` imports);
this command checks the registry, then replaces itself with ``bentoml serve`` on that folder.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("mirec.serve")
HOST = "127.0.0.1"  # serving binds to loopback only; put a proxy in front to expose it
TARGETS = {
    "inprocess": "serving.service:Recommender",  # one process: towers, index, Feast reader
    "composed": "serving.composed:ComposedRecommender",  # towers as separate services
}


def serving_root(given: str | None) -> Path:
    """The folder holding ``serving/`` (default: the source checkout mirec runs from, or cwd)."""
    candidates = [Path(given)] if given else [Path(__file__).resolve().parents[3], Path.cwd()]
    for root in candidates:
        if (root / "serving" / "service.py").is_file():
            return root.resolve()
    from mirec.errors import ConfigError

    raise ConfigError(f"no serving/service.py under {[str(c) for c in candidates]}")


def serve_command(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The ``bentoml serve`` command line and environment for ``args``."""
    from mirec.errors import RegistryError
    from mirec.registry import PRODUCTION, Registry

    registry = Registry(args.registry)
    production = registry.stage(PRODUCTION)
    if production is None:
        raise RegistryError(f"no production model in {registry.path}: deploy one first")
    root = serving_root(args.serving_dir)
    env = {
        **os.environ,
        "BENTOML_HOME": str(registry.bentoml_home),
        "MIREC_REGISTRY": str(registry.root.resolve()),
        "MIREC_MODEL_TAG": production.tag,
    }
    if args.feature_repo:
        env["MIREC_FEATURE_REPO"] = str(Path(args.feature_repo).resolve())
    if args.max_k:
        env["MIREC_MAX_K"] = str(args.max_k)
    if args.events:
        env["MIREC_EVENT_STORE"] = args.events
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", "bentoml", "serve", TARGETS[args.mode], "--host", HOST]
    cmd += ["--port", str(args.port), "--working-dir", str(root)]
    log.info(
        "serving v%d (%s) on http://%s:%d", production.version, production.tag, HOST, args.port
    )
    return cmd, env


def cmd_serve(args: argparse.Namespace) -> int:
    """Replace this process with ``bentoml serve`` (signals reach the server directly)."""
    cmd, env = serve_command(args)
    os.execve(cmd[0], cmd, env)
    return 0  # not reached


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``mirec serve``."""
    parser = sub.add_parser(
        "serve",
        help="serve the registry's production model over HTTP on 127.0.0.1",
        description="Start the BentoML entry service (POST /recommend, /feedback, /items; "
        "/healthz, /readyz, /metrics, Swagger UI at /) for the production model.",
    )
    parser.add_argument("--registry", help="registry root (default: $MIREC_REGISTRY)")
    parser.add_argument("--port", type=int, default=3000, help="TCP port (default 3000)")
    parser.add_argument(
        "--feature-repo", help="Feast repository to read users from (default: the model lineage's)"
    )
    parser.add_argument("--max-k", type=int, help="largest k a request may ask for (default 200)")
    parser.add_argument("--events", help="event store URL for impressions and feedback")
    parser.add_argument(
        "--mode",
        choices=sorted(TARGETS),
        default="inprocess",
        help="inprocess (default, fastest here) or composed (towers as separate services)",
    )
    parser.add_argument("--serving-dir", help="folder that holds serving/ (default: the checkout)")
    parser.set_defaults(func=cmd_serve)
