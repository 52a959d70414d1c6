"""``mirec canary``: status, set-weight, promote, rollback, evaluate, simulate.

Without ``--url`` the commands work on the registry and the event store directly (a running
server follows the registry within one policy interval); with ``--url`` they call the server's
admin endpoints (``$MIREC_ADMIN_TOKEN`` or ``--token-file``), which apply at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any

log = logging.getLogger("mirec.canary")


def _admin(args: argparse.Namespace, path: str, body: dict[str, Any] | None = None) -> Any:
    import requests

    from mirec.errors import ConfigError
    from mirec.serving.canary.admin import TOKEN_FILE_ENV, admin_token

    env = dict(os.environ)
    if args.token_file:
        env.pop("MIREC_ADMIN_TOKEN", None)
        env[TOKEN_FILE_ENV] = args.token_file
    token = admin_token(env)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = requests.post(f"{args.url.rstrip('/')}{path}", json=body, headers=headers, timeout=60)
    if answer.status_code != 200:
        raise ConfigError(f"{path}: {answer.status_code} {answer.json().get('error')}")
    return answer.json()


def _registry(args: argparse.Namespace) -> Any:
    from mirec.registry import Registry

    return Registry(args.registry)


def _policy(args: argparse.Namespace) -> Any:
    from mirec.serving.canary.policy import policy_from_json

    return policy_from_json(args.policy or os.environ.get("MIREC_CANARY_POLICY"))


def cmd_status(args: argparse.Namespace) -> int:
    """Versions, weight, and the policy's view of the stored counts (nothing applied)."""
    from mirec.serving.canary.offline import stage_versions
    from mirec.serving.canary.split import SplitStore

    registry = _registry(args)
    prod, canary = stage_versions(registry)
    split = SplitStore(registry.root).load()
    print(f"production {prod}   canary {canary or 'none'}   weight {split.weight:.3f}")
    if canary is None or not args.events:
        return 0
    from mirec.registry import CanaryLog
    from mirec.serving.canary.offline import arm_counts, resumed_test
    from mirec.serving.canary.policy import ArmHealth, decide
    from mirec.serving.canary.report import decision_text
    from mirec.serving.canary.sequential import SequentialTest
    from mirec.serving.canary.tracker import CtrTracker
    from mirec.serving.events import open_event_store

    config = _policy(args)
    versions = (str(prod), canary)
    counts = arm_counts(CtrTracker(open_event_store(args.events)), versions)
    test: SequentialTest = resumed_test(CanaryLog(registry.root), versions, config)
    decision = decide(versions, counts, (ArmHealth(), ArmHealth()), test, config, "status")
    print(decision_text(decision))
    return 0


def cmd_set_weight(args: argparse.Namespace) -> int:
    """Set the canary's share of users."""
    if args.url:
        print(json.dumps(_admin(args, "/admin/canary", {"weight": args.weight})["result"]))
        return 0
    from mirec.serving.canary.split import SplitStore

    print(f"weight {SplitStore(_registry(args).root).set_weight(args.weight).weight:.3f}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """Make the canary production."""
    if args.url:
        print(_admin(args, "/admin/promote")["result"])
        return 0
    print(f"production is now v{_registry(args).promote_canary().version}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Remove the canary, or (without one) restore the previous production."""
    if args.url:
        print(_admin(args, "/admin/rollback")["result"])
        return 0
    from mirec.registry import CANARY

    registry = _registry(args)
    canary = registry.stage(CANARY)
    if canary is not None:
        registry.clear_canary()
        print(f"canary v{canary.version} removed")
    else:
        print(f"production rolled back to v{registry.rollback().version}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Run the policy now and print its decision (``--apply`` acts on it)."""
    from mirec.registry import CanaryDecision
    from mirec.serving.canary.report import decision_text

    if args.url:
        raw = _admin(args, "/admin/evaluate")["result"]
        decision = None if raw is None else CanaryDecision.parse(raw, "/admin/evaluate")
    else:
        from mirec.errors import ConfigError
        from mirec.serving.canary.offline import evaluate_offline
        from mirec.serving.events import open_event_store

        if not args.events:
            raise ConfigError("give --events URL (the server's event store) or --url")
        store = open_event_store(args.events)
        decision = evaluate_offline(_registry(args), store, _policy(args), apply=args.apply)
    print("no canary in the registry" if decision is None else decision_text(decision))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """Replay held-out users of a dataset against a running server."""
    from mirec.cli import _load
    from mirec.registry import CanaryDecision
    from mirec.serving.canary.report import decision_text, plot_series
    from mirec.serving.canary.simulate import Simulator, held_out_next_items

    replays = held_out_next_items(_load(args, 1.0).events)
    if args.users:
        replays = replays[: args.users]
    token = os.environ.get("MIREC_ADMIN_TOKEN")
    sim = Simulator(args.url, replays, k=args.k, position_bias=args.position_bias, seed=args.seed,
                    admin_token=token)  # fmt: skip
    result = sim.run(args.max_requests, poll_every=args.poll_every)
    print(
        f"{result.requests} requests ({result.failed_requests} failed) in {result.seconds:.0f} s;"
        f" {result.acked_impressions} impressions, {result.hits} hits,"
        f" {result.acked_clicks} clicks"
    )
    for variant, (imps, clicks) in sorted(result.by_variant.items()):
        print(f"  {variant}: {imps} impressions, {clicks} clicks")
    if result.decision:
        print(decision_text(CanaryDecision.parse(result.decision, "/admin/status")))
    if args.plot and result.status:
        print(f"plot: {plot_series(result.status['series'], args.plot)}")
    return 0


def _common(parser: argparse.ArgumentParser, url: bool = True) -> None:
    parser.add_argument("--registry", help="registry root (default: $MIREC_REGISTRY)")
    parser.add_argument("--events", default=os.environ.get("MIREC_EVENT_STORE"),
                        help="event store URL (default: $MIREC_EVENT_STORE)")  # fmt: skip
    parser.add_argument("--policy", help='JSON policy overrides, e.g. {"min_impressions": 500}')
    if url:
        parser.add_argument("--url", help="a running server: act through its admin endpoints")
        parser.add_argument("--token-file", help="file holding the admin token")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``mirec canary ...``."""
    canary = sub.add_parser("canary", help="canary rollout: split, CTR test, promote/rollback")
    cmds = canary.add_subparsers(dest="canary_cmd", required=True)
    status = cmds.add_parser("status", help="versions, weight, CTR table, p-value, decision")
    _common(status, url=False)
    status.set_defaults(func=cmd_status)
    weight = cmds.add_parser("set-weight", help="the canary's share of users, in [0, 1]")
    weight.add_argument("weight", type=float)
    _common(weight)
    weight.set_defaults(func=cmd_set_weight)
    actions = (
        ("promote", cmd_promote, "make the canary production"),
        ("rollback", cmd_rollback, "remove the canary / restore production"),
    )
    for name, func, text in actions:
        action = cmds.add_parser(name, help=text)
        _common(action)
        action.set_defaults(func=func)
    evaluate = cmds.add_parser("evaluate", help="run the policy now on the stored counts")
    _common(evaluate)
    evaluate.add_argument("--apply", action="store_true", help="act on the decision")
    evaluate.set_defaults(func=cmd_evaluate)
    sim = cmds.add_parser("simulate", help="replay held-out users against a running server")
    sim.add_argument("--url", required=True, help="the running entry service")
    sim.add_argument("--data", required=True, help="dataset whose held-out users to replay")
    sim.add_argument("--columns", help="column mapping of a table")
    sim.add_argument("--users", type=int, help="replay only the first N held-out users")
    sim.add_argument("--k", type=int, default=10, help="items per request")
    sim.add_argument("--max-requests", type=int, default=50_000)
    sim.add_argument("--poll-every", type=int, default=200, help="requests between status polls")
    sim.add_argument("--position-bias", type=float, default=0.0, help="click prob (1+pos)^-b")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--plot", help="write a PNG of CTR per variant over time here")
    sim.set_defaults(func=cmd_simulate)
