"""Benchmarks: ``make bench`` writes bench/results.json and bench/results.png.

Every figure is a ratio to its floor measured in the same run, because this
machine is shared and noisy: absolute numbers move, ratios much less.

1. overhead: each sample bundle in-process (parse -> facts -> engine ->
   explained evaluation) / the same facts asserted into durable-rules with
   the same compiled rules, actions answering the same new facts
   (precomputed): what FHIR intake, verification, provenance and
   explanation cost on top of the engine. Target <= 1.5.
2. record size: records of 10, 100, 1,000 and 10,000 resources, mostly
   unrelated (bench/records.py). Target: 10,000 costs <= 12 x 1,000.
3. rule count: the shipped rules x1, x2, x4 (x5 and x10 tried: durable's
   per-ruleset limit bounds a stratum at 400 rules).
4. HTTP: the production server (deploy/gunicorn.conf.py) under wrk, audit in
   memory, on SQLite and on PostgreSQL / a bare Flask endpoint under the
   same settings (bench/http.py). Target >= 0.6 with PostgreSQL.
5. memory: resident memory over 100,000 evaluations in one process.
   Target: growth < 5 MB.

docs/performance.md gives the figures and the commands.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from bench import records
from cds.errors import CdsError
from cds.evaluation import Evaluator
from cds.evaluation.scenarios import default_samples_dir, scenario_files
from cds.evaluation.session import Session
from cds.knowledge import load_ruleset
from cds.knowledge.ruleset import default_ruleset_path

HERE = Path(__file__).resolve().parent
OUT = HERE / "results.json"
CHART = HERE / "results.png"
AS_OF = date(2026, 11, 22)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def timed(fn: Callable[[], Any], seconds: float, at_least: int = 20) -> list[float]:
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(samples) < at_least:
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"per_second": round(len(samples) / sum(samples), 1),
            "p50_ms": round(statistics.median(ordered) * 1000, 3),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
            "n": len(samples)}


def interleaved(ours: Callable[[], Any], floor: Callable[[], Any], seconds: float) -> tuple[list[float], list[float]]:
    """Both sides in alternating slices, so a noisy neighbour hits both."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(4):
        a += timed(ours, seconds / 4, 5)
        b += timed(floor, seconds / 4, 5)
    return a, b


def floor_runner(evaluator: Evaluator, data: Any, as_of: date) -> Callable[[], Any]:
    """Raw engine with the same rules: facts in, the same new facts back."""
    _patient, facts = evaluator.facts(data, as_of)
    session = Session(evaluator.ruleset, facts)
    replies: dict[tuple[int, tuple[str, ...]], list[dict[str, Any]]] = {}

    def record(match: Any) -> list[dict[str, Any]]:
        new = session.on_match(match)
        replies[(match.rule_index, tuple(sorted(f["id"] for f in match.facts.values())))] = new
        return new

    views = [f.engine_view() for f in facts]
    evaluator.engine.run(views, record)

    def replay(match: Any) -> list[dict[str, Any]]:
        return replies.get((match.rule_index, tuple(sorted(f["id"] for f in match.facts.values()))), [])

    return lambda: evaluator.engine.run(views, replay)


def bench_overhead(evaluator: Evaluator, seconds: float) -> dict[str, Any]:
    rows = []
    for bundle_path, expected_path in scenario_files(default_samples_dir()):
        data = json.loads(bundle_path.read_text())
        as_of = date.fromisoformat(json.loads(expected_path.read_text())["asOf"])
        ours_s, floor_s = interleaved(lambda d=data, a=as_of: evaluator.evaluate(d, a),
                                      floor_runner(evaluator, data, as_of), seconds)
        ours, floor = summary(ours_s), summary(floor_s)
        ratio = round(ours["p50_ms"] / floor["p50_ms"], 2)
        rows.append({"sample": bundle_path.stem, "evaluation": ours, "raw_engine": floor, "ratio": ratio})
        print(f"  {bundle_path.stem:48s} p50 {ours['p50_ms']:6.3f} ms | raw {floor['p50_ms']:6.3f} ms | "
              f"ratio {ratio}", flush=True)
    ratios = [r["ratio"] for r in rows]
    return {"samples": rows, "median": round(statistics.median(ratios), 2), "max": max(ratios),
            "min": min(ratios), "target": "<= 1.5",
            "definition": "median evaluation time / median raw durable time, same rules, same facts, "
                          "per sample; both sides interleaved"}


def bench_sizes(evaluator: Evaluator, seconds: float) -> dict[str, Any]:
    from cds.fhir import parse_json

    sizes = (10, 100, 1000, 10_000)
    bundles = {size: records.padded(size) for size in sizes}
    bodies = {size: json.dumps(bundle) for size, bundle in bundles.items()}
    samples: dict[int, list[float]] = {size: [] for size in sizes}
    parsed: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(4):  # round-robin over the sizes (noise falls on all alike)
        for size in sizes:
            samples[size] += timed(lambda b=bundles[size]: evaluator.evaluate(b, AS_OF), seconds / 4, 3)
            parsed[size] += timed(lambda t=bodies[size]: evaluator.evaluate(parse_json(t), AS_OF), seconds / 8, 2)
    rows = []
    for size in sizes:
        evaluation = evaluator.evaluate(bundles[size], AS_OF)
        p50 = statistics.median(samples[size])
        rows.append({"resources": size, "p50_ms": round(p50 * 1000, 3),
                     "p50_with_json_parse_ms": round(statistics.median(parsed[size]) * 1000, 3),
                     "us_per_resource": round(p50 / size * 1e6, 2), "triage": evaluation["triage"],
                     "firings": len(evaluation["firings"]), "n": len(samples[size])})
        print(f"  {size:6d} resources: p50 {rows[-1]['p50_ms']:9.3f} ms, {rows[-1]['us_per_resource']:8.2f} us "
              f"per resource", flush=True)
    by = {r["resources"]: r for r in rows}
    return {"records": rows, "ratio_10000_to_1000": round(by[10_000]["p50_ms"] / by[1000]["p50_ms"], 2),
            "target": "<= 12"}


def _copied_ruleset(times: int, directory: Path) -> Path:
    """The shipped ruleset with ``times`` distinct copies of every module
    (rule ids renamed; same patterns, so the copies fire alongside)."""
    source = Path(default_ruleset_path())
    target = directory / f"x{times}"
    shutil.copytree(source, target)
    manifest = yaml.safe_load((source / "ruleset.yaml").read_text())
    modules = list(manifest["modules"])
    for copy in range(2, times + 1):
        for module in manifest["modules"]:
            doc = yaml.safe_load((source / "modules" / f"{module}.yaml").read_text())
            name = f"{module}-c{copy}"
            doc["module"] = name
            for rule in doc["rules"]:
                rule["id"] = name + rule["id"][len(module):]
            (target / "modules" / f"{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
            modules.append(name)
    manifest["modules"] = modules
    manifest["name"] = f"{manifest['name']}-x{times}"
    (target / "ruleset.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return target


def bench_rules(seconds: float) -> dict[str, Any]:
    bundle = records.sample()
    rows: list[dict[str, Any]] = []
    evaluators: dict[int, Evaluator] = {}
    with tempfile.TemporaryDirectory(prefix="cds-bench-rules-") as tmp:
        for times in (1, 2, 4, 5, 10):
            path = _copied_ruleset(times, Path(tmp))
            try:
                evaluators[times] = Evaluator(load_ruleset(path))
            except CdsError as exc:
                rows.append({"copies": times, "refused_at_load": str(exc)})
                print(f"  x{times}: refused at load: {exc}", flush=True)
    # Round-robin, so the machine's noise falls on every size alike.
    samples: dict[int, list[float]] = {times: [] for times in evaluators}
    for _ in range(4):
        for times, evaluator in evaluators.items():
            samples[times] += timed(lambda e=evaluator: e.evaluate(bundle, AS_OF), seconds / 4, 5)
    for times, evaluator in evaluators.items():
        evaluation = evaluator.evaluate(bundle, AS_OF)
        rows.append({"copies": times, "rules": len(evaluator.ruleset.rules), "firings": len(evaluation["firings"]),
                     "p50_ms": round(statistics.median(samples[times]) * 1000, 3), "n": len(samples[times])})
        print(f"  x{times}: {rows[-1]['rules']} rules, {rows[-1]['firings']} firings, p50 {rows[-1]['p50_ms']} ms",
              flush=True)
    rows.sort(key=lambda r: r["copies"])
    base = next(r["p50_ms"] for r in rows if r["copies"] == 1)
    for row in rows:
        if "p50_ms" in row:
            row["cost_vs_x1"] = round(row["p50_ms"] / base, 2)
    return {"sample": records.TYPICAL, "copies": rows,
            "note": "copies keep the shipped patterns, so each copy fires alongside the original and its "
                    "conclusions merge into the same facts; large strata are split into several durable rulesets"}


def bench_memory(evaluator: Evaluator, evaluations: int) -> dict[str, Any]:
    typical = records.sample()
    for _ in range(1000):
        evaluator.evaluate(typical, AS_OF)
    before = rss_mb()
    curve = [(0, round(before, 2))]
    start = time.perf_counter()
    step = max(1, evaluations // 20)
    for n in range(1, evaluations + 1):
        evaluator.evaluate(typical, AS_OF)
        if n % step == 0:
            curve.append((n, round(rss_mb(), 2)))
    elapsed = time.perf_counter() - start
    after = rss_mb()
    return {"evaluations": evaluations, "rss_before_mb": round(before, 1), "rss_after_mb": round(after, 1),
            "growth_mb": round(after - before, 2), "target": "< 5",
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "evaluations_per_second": round(evaluations / elapsed, 1), "curve": curve}


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    fig.suptitle(f"cds benchmarks ({results['machine']['cpus']} CPUs, ratios to floors measured in the same run)")
    ax = axes[0][0]
    if "overhead" in results:
        rows = results["overhead"]["samples"]
        ax.bar(range(len(rows)), [r["ratio"] for r in rows], color="tab:blue")
        ax.axhline(1.5, color="red", linestyle="--", label="target 1.5")
        ax.set_title(f"1. engine overhead per sample (median {results['overhead']['median']})")
        ax.set_xlabel("sample")
        ax.set_ylabel("evaluation / raw durable")
        ax.legend()
    ax = axes[0][1]
    if "sizes" in results:
        rows = results["sizes"]["records"]
        xs = [r["resources"] for r in rows]
        ax.loglog(xs, [r["p50_ms"] for r in rows], "o-", label="p50 ms per record")
        ax.loglog(xs, [r["us_per_resource"] / 1000 for r in rows], "s--", label="ms per resource")
        ax.set_title(f"2. record size (10k / 1k = {results['sizes']['ratio_10000_to_1000']}, target <= 12)")
        ax.set_xlabel("resources in the record")
        ax.legend()
    ax = axes[0][2]
    if "rules" in results:
        rows = [r for r in results["rules"]["copies"] if "p50_ms" in r]
        ax.plot([r["rules"] for r in rows], [r["p50_ms"] for r in rows], "o-")
        for r in rows:
            ax.annotate(f"x{r['copies']}", (r["rules"], r["p50_ms"]))
        ax.set_title("3. rule count (shipped rules copied)")
        ax.set_xlabel("rules")
        ax.set_ylabel("p50 ms per evaluation")
    ax = axes[1][0]
    http = results.get("http", {})
    names = [k for k in ("bare_flask", "service_audit_memory", "service_audit_sqlite", "service_audit_postgresql")
             if k in http]
    if names:
        ax.bar(range(len(names)), [http[k]["requests_per_second"] for k in names], color="tab:green")
        ax.set_xticks(range(len(names)), [n.replace("service_audit_", "audit ") for n in names], rotation=15)
        ax.set_title("4. HTTP patient-view, requests/s (wrk, loopback)")
    ax = axes[1][1]
    if names:
        ax.bar(range(len(names)), [http[k]["p50_ms"] for k in names], label="p50")
        ax.bar(range(len(names)), [http[k]["p99_ms"] - http[k]["p50_ms"] for k in names],
               bottom=[http[k]["p50_ms"] for k in names], label="p99")
        ax.set_xticks(range(len(names)), [n.replace("service_audit_", "audit ") for n in names], rotation=15)
        ax.set_yscale("log")
        ax.set_ylim(bottom=1)
        ax.set_title("4. HTTP latency, ms")
        ax.legend()
    ax = axes[1][2]
    if "memory" in results:
        curve = results["memory"]["curve"]
        ax.plot([c[0] for c in curve], [c[1] for c in curve], "o-")
        ax.set_title(f"5. RSS over {results['memory']['evaluations']:,} evaluations "
                     f"(growth {results['memory']['growth_mb']} MB)")
        ax.set_xlabel("evaluations")
        ax.set_ylabel("MB")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


SECTIONS = ("overhead", "sizes", "rules", "http", "memory")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=0.6, help="time per sample (both sides together)")
    parser.add_argument("--memory-evaluations", type=int, default=100_000)
    parser.add_argument("--http-seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers for the HTTP figures")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run only these sections")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    sections = args.only or list(SECTIONS)
    started = time.perf_counter()
    evaluator = Evaluator(load_ruleset())
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "load_average_at_start": os.getloadavg()},
        "ruleset": evaluator.ruleset.identity(),
        "command": "make bench  (.venv/bin/python -m bench.run)",
    }
    clock: dict[str, float] = {}
    if "overhead" in sections:
        mark = time.perf_counter()
        print("1. engine overhead (evaluation / raw durable), per sample", flush=True)
        results["overhead"] = bench_overhead(evaluator, args.seconds)
        clock["overhead"] = time.perf_counter() - mark
    if "sizes" in sections:
        mark = time.perf_counter()
        print("2. record size", flush=True)
        results["sizes"] = bench_sizes(evaluator, max(1.0, args.seconds * 2))
        clock["sizes"] = time.perf_counter() - mark
    if "rules" in sections:
        mark = time.perf_counter()
        print("3. rule count", flush=True)
        results["rules"] = bench_rules(max(1.0, args.seconds * 2))
        clock["rules"] = time.perf_counter() - mark
    if "http" in sections:
        mark = time.perf_counter()
        from bench import http

        print("4. HTTP (wrk against gunicorn on loopback)", flush=True)
        results["http"] = http.run(records.patient_view(), seconds=args.http_seconds, workers=args.workers)
        for name, row in results["http"].items():
            if isinstance(row, dict) and "requests_per_second" in row:
                print(f"  {name:28s} {row['requests_per_second']:8.1f}/s p50 {row['p50_ms']:8.2f} ms "
                      f"p99 {row['p99_ms']:8.2f} ms" + (f" ratio {row['ratio_to_bare']}" if "ratio_to_bare" in row
                                                       else ""), flush=True)
        clock["http"] = time.perf_counter() - mark
    if "memory" in sections:
        mark = time.perf_counter()
        print(f"5. memory over {args.memory_evaluations} evaluations", flush=True)
        results["memory"] = bench_memory(evaluator, args.memory_evaluations)
        clock["memory"] = time.perf_counter() - mark
    results["section_seconds"] = {k: round(v, 1) for k, v in clock.items()}
    results["machine"]["load_average_at_end"] = os.getloadavg()
    results["elapsed_seconds"] = round(time.perf_counter() - started, 1)
    results["targets"] = targets(results)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    chart(results, args.out.with_suffix(".png"))
    print("\ntargets:")
    for row in results["targets"]:
        print(f"  {row['figure']:44s} {row['measured']!s:>10s}  target {row['target']:8s}  "
              f"{'met' if row['met'] else 'NOT met'}")
    print(f"written to {args.out} and {args.out.with_suffix('.png')} in {results['elapsed_seconds']} s")


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    if "overhead" in results:
        m = results["overhead"]["median"]
        out.append({"figure": "1. engine overhead, median ratio", "measured": m, "target": "<= 1.5", "met": m <= 1.5})
    if "sizes" in results:
        m = results["sizes"]["ratio_10000_to_1000"]
        out.append({"figure": "2. record 10,000 / 1,000 resources", "measured": m, "target": "<= 12", "met": m <= 12})
    if "rules" in results:
        rows = [r for r in results["rules"]["copies"] if "cost_vs_x1" in r]
        last = rows[-1]
        out.append({"figure": f"3. rules x{last['copies']} cost vs x1", "measured": last["cost_vs_x1"],
                    "target": "report", "met": True})
    http = results.get("http", {})
    for name in ("service_audit_postgresql", "service_audit_sqlite", "service_audit_memory"):
        if name in http and "ratio_to_bare" in http[name]:
            m = http[name]["ratio_to_bare"]
            out.append({"figure": f"4. HTTP {name.replace('service_', '')} / bare Flask", "measured": m,
                        "target": ">= 0.6", "met": m >= 0.6})
    if "memory" in results:
        m = results["memory"]["growth_mb"]
        out.append({"figure": "5. RSS growth over 100k evaluations, MB", "measured": m, "target": "< 5",
                    "met": m < 5})
    return out


if __name__ == "__main__":
    main()
