"""Canary benchmark: the replay against a real ``mirec serve``, A/A error rate, split overhead.

Setup (in ``--workdir``, reused when already there): Beauty (S3-Rec files, protocol B). Every
user's last event is held out for the replay (``simulate.held_out_next_items``); the rest is
what serving knows: Spark feature build -> Feast repository (SQLite online store) -> bundles on
the feature build's vocabulary: popularity, ItemKNN (both fitted from counts) and a SASRec
trained for ``--sasrec-minutes``, all evaluated on the same protocol B split of the served
events (validation = each user's second-to-last served event) -> exact faiss index per bundle.

1. **Replay** (``mirec.serving.canary.simulate.Simulator``) against ``mirec serve`` with the
   canary controller on (weight 0.5, default policy): *promote* = production popularity,
   canary the better model (``--better``: SASRec by default); *rollback* = the
   better model in production, popularity as the canary. Each stops at the applied decision;
   reported: the decision, the impressions (both arms) and requests it took, the CTR per arm,
   and a PNG of CTR per variant over time (``benchmarks/results/canary_<name>.png``).
2. **A/A** (offline): the policy and the sequential test as the controller runs them, on
   simulated clicks at the CTR the replay observed for the better model, the same in both
   arms, looking after every batch of requests; reported: the share of runs that promoted or
   rolled back, with its 95% Wilson interval (target <= 5%), beside a fixed-horizon z-test
   looked at as often.
3. **Split overhead**: one ``mirec serve`` over a registry whose v1 and v2 are the same SASRec
   bundle (tower + faiss: the neural serving path); p50 latency at concurrency 1
   (``bench_serving.run_level``: its own load generator process) without a canary, with v2 as
   the canary at weight 0.5, and without again (target: p50 with the canary - mean p50
   without <= 1 ms).

Writes ``benchmarks/results/canary.json`` and ``canary.md``::

    python benchmarks/bench_canary.py --data-root ../shared/data
    python benchmarks/bench_canary.py --data-root ../shared/data --parts aa   # one part
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import Server, _index, run_level  # noqa: E402 - the serving benchmark's client

log = logging.getLogger("bench_canary")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TOKEN = "bench-canary-token"
PARTS = ("replay", "aa", "overhead")
METRICS = ("hr@10", "ndcg@10", "hr@20")


# --- setup ------------------------------------------------------------------------------------


def _train(name: str, cfg_dict: dict[str, Any], dataset: Any, vocab: Any, out: Path) -> dict:
    from mirec.config import from_dict
    from mirec.training import train

    cfg = from_dict(cfg_dict)
    started = time.perf_counter()
    result = train(cfg, dataset, out, vocab=vocab, progress=False)
    index = _index(result.bundle_dir)
    return {
        "name": name,
        "bundle": str(result.bundle_dir),
        "config": cfg.model_dump(mode="json"),
        "metrics": result.metrics,
        "epochs": len(result.history),
        "train_seconds": round(result.train_seconds, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "index": index["kind"] if "kind" in index else index,
    }


# SASRec for a short budget (beauty_sasrec.yaml is tuned for 13 minutes): no warm-up epoch, so
# the cosine decay over the epochs that fit in the budget starts at the full learning rate.
SASREC_SHORT: dict[str, dict[str, Any]] = {"optim": {"warmup_epochs": 0}, "loss": {}}


def _features(work: Path, data: Path) -> dict[str, Any]:
    """The served events' feature build and Feast repository (reused when there)."""
    done = work / "features.json"
    if done.is_file():
        return dict(json.loads(done.read_text()))
    from dataclasses import replace

    from mirec.data.loaders import load_dataset
    from mirec.features import feast_io
    from mirec.features.build import build_dataset
    from mirec.features.repo import StoreSettings, render_repo
    from mirec.serving.canary.simulate import held_out_next_items, without_held_out

    started = time.perf_counter()
    full = load_dataset(str(data))
    replays = held_out_next_items(full.events)
    served = replace(full, events=without_held_out(full.events, replays))
    root = work / "features"
    build_dataset(served, root, now=datetime.now(UTC) - timedelta(minutes=1))
    repo = render_repo(root, StoreSettings(project=f"bench_canary_{os.getpid()}"))
    feast_io.apply(repo)
    feast_io.materialize(repo)
    info = {
        "repo": str(repo),
        "root": str(root),
        "users": len(replays),
        "served_events": len(served.events),
        "held_out_events": len(replays),
        "features_seconds": round(time.perf_counter() - started, 1),
        "replays": [[r.user_id, r.next_item] for r in replays],
    }
    done.write_text(json.dumps(info))
    return info


def setup(work: Path, data: Path, sasrec_minutes: float) -> dict[str, Any]:
    """Features, Feast repository and the two bundles under ``work`` (each reused when there
    with the same config)."""
    from dataclasses import replace

    from mirec.data.loaders import load_dataset
    from mirec.data.vocab import Vocabulary
    from mirec.features.repo import Layout
    from mirec.serving.canary.simulate import Replay, without_held_out

    info = _features(work, data)
    base = yaml.safe_load((ROOT / "configs" / "beauty_sasrec.yaml").read_text())
    sasrec_cfg = {
        **base,
        "loss": {**base["loss"], **SASREC_SHORT["loss"]},
        "optim": {**base["optim"], **SASREC_SHORT["optim"], "max_minutes": sasrec_minutes},
    }
    floor = {"data": base["data"], "eval": base["eval"]}
    configs = {
        # a floor's item vectors are one column: serving checks the index against model.dim
        "popularity": {**floor, "model": {"name": "popularity", "dim": 1}},
        "itemknn": {**floor, "model": {"name": "itemknn", "dim": 1}},
        "sasrec": sasrec_cfg,
    }
    models: dict[str, Any] = {}
    served = vocab = None
    for name, cfg in configs.items():
        done = work / f"model_{name}.json"
        if done.is_file():
            cached = json.loads(done.read_text())
            if cached.get("asked") == cfg:
                models[name] = cached
                continue
        if served is None:
            full = load_dataset(str(data))
            replays = [Replay(u, i) for u, i in info["replays"]]
            served = replace(full, events=without_held_out(full.events, replays))
            vocab = Vocabulary.load(Layout(Path(info["root"])).vocab)
        models[name] = {"asked": cfg, **_train(name, cfg, served, vocab, work / f"run_{name}")}
        done.write_text(json.dumps(models[name]))
    return {**info, "models": models}


def make_registry(root: Path, setup_info: dict[str, Any], versions: list[str]) -> Any:
    """A fresh registry at ``root`` with ``versions`` (model names) as v1, v2, ..."""
    from mirec.registry import Registry

    if (root / "registry.json").exists():
        raise SystemExit(f"{root} already holds a registry: remove it or use a new --workdir")
    registry = Registry(root)
    for n, name in enumerate(versions, 1):
        model = setup_info["models"][name]
        registry.register(
            model["bundle"],
            metrics=model["metrics"],
            data_fingerprint=f"bench-canary-{root.name}-{n}",  # the same bundle twice: 2 versions
            config=model["config"],
            code_version="bench",
            lineage={"feature_repo": setup_info["repo"]},
        )
    return registry


def _status(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/admin/status", timeout=10) as resp:
        return dict(json.loads(resp.read())["status"])


def _wait_for(url: str, key: str, value: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _status(url).get(key) == value:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the server's {key} did not become {value!r} in {timeout} s")


# --- 1. replay --------------------------------------------------------------------------------


def replay(work: Path, info: dict[str, Any], name: str, prod: str, canary: str,
           args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """One replay scenario: production ``prod``, canary ``canary``, until the applied decision."""
    from mirec.features import feast_io
    from mirec.registry import CANARY, PRODUCTION
    from mirec.serving.canary.report import plot_series
    from mirec.serving.canary.simulate import Replay, Simulator
    from mirec.serving.canary.split import SplitStore

    # a click pushes its item into the user's online sequence: restore the served state, so a
    # user replayed by an earlier run does not have the held-out item in the history already
    feast_io.materialize(info["repo"])
    root = work / f"registry_{name}"
    registry = make_registry(root, info, [prod, canary])
    registry.set_stage(PRODUCTION, 1)
    registry.set_stage(CANARY, 2)
    SplitStore(registry.root).set_weight(args.weight)
    env = {
        "MIREC_EVENT_STORE": str(work / f"events_{name}.db"),
        "MIREC_ADMIN_TOKEN": TOKEN,
        "MIREC_CANARY_INTERVAL_S": "1",
    }
    server = Server({"registry": str(root)}, "inprocess", env, work / f"serve_{name}.log")
    try:
        ready_s = server.wait_ready()
        replays = [Replay(u, i) for u, i in info["replays"]]
        sim = Simulator(server.url, replays, k=args.k, seed=args.seed, admin_token=TOKEN)
        both: dict[str, Any] = {}  # the last series with both arms (before the decision)

        def keep(res: Any) -> None:
            series = (res.status or {}).get("series") or {}
            if series.get("canary"):
                both["series"] = series

        result = sim.run(args.max_requests, poll_every=args.poll_every, on_poll=keep)
    finally:
        server.stop()
    decision = result.decision or {}
    plot = RESULTS / f"canary_{name}.png"
    if both:
        title = f"{name}: production {prod}, canary {canary} (weight {args.weight})"
        plot_series(both["series"], str(plot), title=title)
    after, left = registry.stage(PRODUCTION), registry.stage(CANARY)
    out = {
        "production": prod,
        "canary": canary,
        "weight": args.weight,
        "k": args.k,
        "ready_s": round(ready_s, 1),
        "decision": decision.get("decision"),
        "applied": bool(decision.get("applied")),
        "reasons": decision.get("reasons"),
        "p_value": decision.get("p_value"),
        "decision_impressions": _arm(decision, "production", "impressions")
        + _arm(decision, "canary", "impressions"),
        "decision_clicks": {a: _arm(decision, a, "clicks") for a in ("production", "canary")},
        "decision_ctr": {a: _arm(decision, a, "ctr") for a in ("production", "canary")},
        "decision_arm_impressions": {
            a: _arm(decision, a, "impressions") for a in ("production", "canary")
        },
        "requests": result.requests,
        "failed_requests": result.failed_requests,
        "acked_impressions": result.acked_impressions,
        "acked_clicks": result.acked_clicks,
        "by_variant": result.by_variant,
        "seconds": round(result.seconds, 1),
        "production_after": None if after is None else after.version,
        "canary_after": None if left is None else left.version,
        "plot": plot.name if plot.exists() else None,
    }
    log.info("replay %s: %s", name, {k: v for k, v in out.items() if k != "by_variant"})
    return out


def _arm(decision: dict[str, Any], arm: str, key: str) -> Any:
    return (decision.get(arm) or {}).get(key, 0)


# --- 2. A/A -----------------------------------------------------------------------------------


def wilson(successes: int, n: int) -> tuple[float, float]:
    from mirec.serving.canary.sequential import wilson_interval

    band = wilson_interval(successes, n)
    return band.low, band.high


def aa(ctr: float, args: argparse.Namespace) -> dict[str, Any]:
    """A/A runs through ``policy.decide``: both arms click at ``ctr`` per impression.

    Clicks arrive as in the replay: at most one per answer of ``k`` items (the held-out item),
    with probability ``k * ctr``. Users split by ``weight``; the policy looks after every
    ``batch`` requests, up to ``looks`` looks per run.
    """
    from mirec.serving.canary.policy import ArmHealth, PolicyConfig, decide
    from mirec.serving.canary.sequential import SequentialTest
    from mirec.serving.canary.tracker import Counts

    rng = np.random.default_rng(args.seed)
    config = PolicyConfig()
    q = min(1.0, args.k * ctr)
    wrong = {"promote": 0, "rollback": 0}
    z_wrong = 0
    stop_impressions = []
    started = time.perf_counter()
    for _ in range(args.aa_runs):
        test = SequentialTest(config.tau2, config.alpha)
        n_c = n_t = c_c = c_t = 0
        z_flagged = False
        for _look in range(args.aa_looks):
            to_canary = int(rng.binomial(args.aa_batch, args.weight))
            to_prod = args.aa_batch - to_canary
            n_c, n_t = n_c + args.k * to_prod, n_t + args.k * to_canary
            c_c += int(rng.binomial(to_prod, q))
            c_t += int(rng.binomial(to_canary, q))
            decision = decide(("v1", "v2"), (Counts(n_c, c_c), Counts(n_t, c_t)),
                              (ArmHealth(), ArmHealth()), test, config, "aa")  # fmt: skip
            enough = min(n_c, n_t) >= config.min_impressions
            z_flagged = z_flagged or (enough and decision.z_p_value <= config.alpha)
            if decision.decision != "hold":
                wrong[decision.decision] += 1
                stop_impressions.append(n_c + n_t)
                break
        z_wrong += int(z_flagged)
    runs = args.aa_runs
    total = wrong["promote"] + wrong["rollback"]
    low, high = wilson(total, runs)
    z_low, z_high = wilson(z_wrong, runs)
    out = {
        "runs": runs,
        "ctr": ctr,
        "click_prob_per_request": q,
        "k": args.k,
        "weight": args.weight,
        "batch_requests": args.aa_batch,
        "looks": args.aa_looks,
        "impressions_per_run": args.aa_batch * args.aa_looks * args.k,
        "wrong_promotes": wrong["promote"],
        "wrong_rollbacks": wrong["rollback"],
        "wrong_rate": total / runs,
        "wrong_rate_ci95": [low, high],
        "target": 0.05,
        "met": total / runs <= 0.05,
        "interval_within_target": high <= 0.05,
        "z_test_wrong_rate": z_wrong / runs,
        "z_test_wrong_rate_ci95": [z_low, z_high],
        "seconds": round(time.perf_counter() - started, 1),
    }
    log.info("A/A: %s", out)
    return out


# --- 3. split overhead ------------------------------------------------------------------------


def overhead(work: Path, info: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """p50 at c1 without a canary, with one at ``weight``, and without again (one server)."""
    from mirec.registry import CANARY, PRODUCTION
    from mirec.serving.canary.split import SplitStore

    root = work / "registry_overhead"
    registry = make_registry(root, info, ["sasrec", "sasrec"])
    registry.set_stage(PRODUCTION, 1)
    SplitStore(registry.root).set_weight(args.weight)
    users_file = work / "users.json"
    users_file.write_text(json.dumps([u for u, _ in info["replays"]]))
    env = {
        "MIREC_EVENT_STORE": str(work / "events_overhead.db"),
        "MIREC_ADMIN_TOKEN": TOKEN,
        "MIREC_CANARY_INTERVAL_S": "1",
    }
    server = Server({"registry": str(root)}, "inprocess", env, work / "serve_overhead.log")
    levels = []
    try:
        server.wait_ready()
        for phase in ("without", "with", "without_again"):
            if phase == "with":
                registry.set_stage(CANARY, 2)
                _wait_for(server.url, "canary_version", "v2")
            elif phase == "without_again":
                registry.clear_canary()
                _wait_for(server.url, "canary_version", None)
            level = run_level(server, users_file, 1, args.overhead_seconds)
            levels.append({"phase": phase, **level})
    finally:
        server.stop()
    without = [lv["p50_ms"] for lv in levels if lv["phase"] != "with"]
    with_canary = next(lv["p50_ms"] for lv in levels if lv["phase"] == "with")
    diff = with_canary - float(np.mean(without))
    out = {
        "weight": args.weight,
        "seconds_per_level": args.overhead_seconds,
        "levels": levels,
        "p50_without_ms": round(float(np.mean(without)), 2),
        "p50_with_ms": with_canary,
        "p50_overhead_ms": round(diff, 2),
        "target_ms": 1.0,
        "met": diff <= 1.0,
    }
    log.info("overhead: %s", {k: v for k, v in out.items() if k != "levels"})
    return out


# --- report -----------------------------------------------------------------------------------


def render(result: dict[str, Any]) -> str:
    """The markdown report."""
    lines = ["# Canary benchmark", "", f"{result['when']}, {result['machine']}. {result['note']}"]
    setup_info = result.get("setup")
    if setup_info:
        lines += [
            "",
            f"Beauty, protocol B: {setup_info['users']:,} users replayed (each user's last "
            f"event held out; serving knows the other {setup_info['served_events']:,} events). "
            f"Feature build + Feast: {setup_info['features_seconds']} s.",
            "",
            "Models on the served events' protocol B split (valid = second-to-last served "
            "event, full ranking, history excluded):",
            "",
            "| model | epochs | train s | " + " | ".join(f"valid {m}" for m in METRICS)
            + " | " + " | ".join(f"test {m}" for m in METRICS) + " |",
            "|---|---|---|" + "---|" * (2 * len(METRICS)),
        ]  # fmt: skip
        for name, m in setup_info["models"].items():
            vals = [m["metrics"].get(f"valid/{k}", float("nan")) for k in METRICS]
            vals += [m["metrics"].get(f"test/{k}", float("nan")) for k in METRICS]
            lines.append(f"| {name} | {m['epochs']} | {m['train_seconds']} | "
                         + " | ".join(f"{v:.4f}" for v in vals) + " |")  # fmt: skip
    if "replay" in result:
        lines += [
            "",
            "## Replay against `mirec serve` (weight 0.5, default policy, k 10, every hit clicked)",
            "",
            "| scenario | production | canary | decision | applied | impressions at decision "
            "| requests | CTR production | CTR canary | always-valid p | seconds | production "
            "after | plot |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in result["replay"].items():
            plot = f"![{name}]({r['plot']})" if r["plot"] else "-"
            lines.append(
                f"| {name} | {r['production']} | {r['canary']} | {r['decision']} | "
                f"{r['applied']} | {r['decision_impressions']:,} | {r['requests']:,} | "
                f"{r['decision_ctr']['production']:.4%} | {r['decision_ctr']['canary']:.4%} | "
                f"{(r['p_value'] if r['p_value'] is not None else float('nan')):.3g} | "
                f"{r['seconds']} | v{r['production_after']} | "
                f"{plot} |"
            )
    if "aa" in result:
        a = result["aa"]
        lo, hi = a["wrong_rate_ci95"]
        zlo, zhi = a["z_test_wrong_rate_ci95"]
        lines += [
            "",
            "## A/A (offline, policy + mSPRT, simulated clicks)",
            "",
            f"{a['runs']} runs, CTR {a['ctr']:.4%} in both arms (per answer of {a['k']} items "
            f"one click with probability {a['click_prob_per_request']:.4f}), weight "
            f"{a['weight']}, a look after every {a['batch_requests']} requests, "
            f"{a['looks']} looks ({a['impressions_per_run']:,} impressions) per run.",
            "",
            "| test | wrong promotes | wrong rollbacks | wrong rate | 95% Wilson | target |",
            "|---|---|---|---|---|---|",
            f"| policy (mSPRT) | {a['wrong_promotes']} | {a['wrong_rollbacks']} | "
            f"{a['wrong_rate']:.2%} | [{lo:.2%}, {hi:.2%}] | <= 5%: "
            f"{'met' if a['met'] else 'missed'}"
            f"{' (the whole interval)' if a.get('interval_within_target') else ''} |",
            f"| z-test at every look (for comparison, not used) | - | - | "
            f"{a['z_test_wrong_rate']:.2%} | [{zlo:.2%}, {zhi:.2%}] | - |",
        ]
    if "overhead" in result:
        o = result["overhead"]
        lines += [
            "",
            f"## Split overhead (c1, {o['seconds_per_level']} s per level, "
            "`bench_serving.py loadgen`, k 20; canary = the same SASRec bundle as v2)",
            "",
            "| phase | requests | p50 ms | p99 ms | mean ms | errors |",
            "|---|---|---|---|---|---|",
        ]
        for lv in o["levels"]:
            lines.append(f"| {lv['phase']} | {lv['requests']:,} | {lv['p50_ms']} | "
                         f"{lv['p99_ms']} | {lv['mean_ms']} | {lv['errors']} |")  # fmt: skip
        lines += [
            "",
            f"p50 with the canary at weight {o['weight']} - mean p50 without: "
            f"**{o['p50_overhead_ms']} ms** (target <= {o['target_ms']} ms: "
            f"{'met' if o['met'] else 'missed'}).",
        ]
    return "\n".join(lines) + "\n"


def portable(value: Any) -> Any:
    """``value`` with this checkout's absolute paths written relative to the repository."""
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v) for v in value]
    if isinstance(value, str) and value.startswith(f"{ROOT}/"):
        return value[len(str(ROOT)) + 1 :]
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--data-root", default=os.environ.get("MIREC_SHARED_DATA", "../shared/data")
    )
    parser.add_argument("--workdir", default=".mirec/bench_canary")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"of {list(PARTS)}")
    parser.add_argument("--sasrec-minutes", type=float, default=4.0, help="SASRec budget")
    parser.add_argument("--better", default="sasrec", choices=["itemknn", "sasrec"],
                        help="the better model: canary of the promote replay, production of the "
                        "rollback one (popularity is the other)")  # fmt: skip
    parser.add_argument("--weight", type=float, default=0.5, help="the canary's share of users")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--max-requests", type=int, default=30_000, help="per replay")
    parser.add_argument("--poll-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--aa-runs", type=int, default=400)
    parser.add_argument("--aa-looks", type=int, default=200)
    parser.add_argument("--aa-batch", type=int, default=100, help="requests between looks")
    parser.add_argument("--aa-ctr", type=float, help="A/A CTR (default: the better one's)")
    parser.add_argument("--overhead-seconds", type=float, default=20.0)
    parser.add_argument("--note", default="", help="free text for the report (machine load)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    parts = args.parts.split(",")
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ["BENTOML_HOME"] = str(work / "bentoml")  # every registry here shares one store
    RESULTS.mkdir(parents=True, exist_ok=True)
    previous = RESULTS / "canary.json"
    result: dict[str, Any] = json.loads(previous.read_text()) if previous.is_file() else {}
    result.update(
        when=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        note=args.note,
    )
    needs_setup = "replay" in parts or "overhead" in parts or args.aa_ctr is None
    info = setup(work, Path(args.data_root) / "Beauty", args.sasrec_minutes) if needs_setup else {}
    if info:
        result["setup"] = {k: v for k, v in info.items() if k != "replays"}
        for model in result["setup"]["models"].values():
            model.pop("asked", None)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    if "replay" in parts:
        run = work / f"replay_{stamp}"
        run.mkdir()
        result["replay"] = {
            "promote": replay(run, info, "promote", "popularity", args.better, args),
            "rollback": replay(run, info, "rollback", args.better, "popularity", args),
        }
    if "aa" in parts:
        ctr = args.aa_ctr
        if ctr is None:
            ctr = result["replay"]["rollback"]["decision_ctr"]["production"]  # the better one's
        result["aa"] = aa(float(ctr), args)
    if "overhead" in parts:
        run = work / f"overhead_{stamp}"
        run.mkdir()
        result["overhead"] = overhead(run, info, args)
    (RESULTS / "canary.json").write_text(json.dumps(portable(result), indent=2))
    report = render(result)
    (RESULTS / "canary.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
