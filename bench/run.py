"""Benchmarks: ``make bench`` writes bench/results.json and prints a summary.

Figures are ratios measured side by side in one run, because this machine
is shared and noisy: absolute numbers move, ratios much less.

* evaluation: each sample bundle in-process (parse -> facts -> engine ->
  explained evaluation), evaluations/s and p50/p99 latency;
* floor: the same facts asserted into raw durable-rules with the same
  compiled rules, actions returning the same new facts (precomputed), so
  the ratio is what FHIR intake, provenance and explanation cost on top;
* memory: resident memory before and after N evaluations in one process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from datetime import date
from pathlib import Path
from typing import Any

from cds.evaluation import Evaluator
from cds.evaluation.scenarios import default_samples_dir, scenario_files
from cds.evaluation.session import Session
from cds.knowledge import load_ruleset

OUT = Path(__file__).resolve().parent / "results.json"


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def timed(fn, seconds: float) -> list[float]:
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(samples) < 20:
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


def floor_runner(evaluator: Evaluator, data: Any, as_of: date):
    """Raw engine with the same rules: facts in, the same new facts back."""
    patient, facts = evaluator.facts(data, as_of)
    session = Session(evaluator.ruleset, facts)
    replies: dict[tuple[int, tuple[str, ...]], list[dict[str, Any]]] = {}

    def record(match):
        new = session.on_match(match)
        replies[(match.rule_index, tuple(sorted(f["id"] for f in match.facts.values())))] = new
        return new

    views = [f.engine_view() for f in facts]
    evaluator.engine.run(views, record)

    def replay(match):
        return replies.get((match.rule_index, tuple(sorted(f["id"] for f in match.facts.values()))), [])

    return lambda: evaluator.engine.run(views, replay)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=0.6, help="time per sample and side")
    parser.add_argument("--memory-evaluations", type=int, default=100_000)
    args = parser.parse_args()
    evaluator = Evaluator(load_ruleset())
    rows = []
    for bundle_path, expected_path in scenario_files(default_samples_dir()):
        data = json.loads(bundle_path.read_text())
        as_of = date.fromisoformat(json.loads(expected_path.read_text())["asOf"])
        ours = summary(timed(lambda: evaluator.evaluate(data, as_of), args.seconds))
        floor = summary(timed(floor_runner(evaluator, data, as_of), args.seconds))
        rows.append({"sample": bundle_path.stem, "evaluation": ours, "raw_engine": floor,
                     "ratio": round(floor["per_second"] / ours["per_second"], 2)})
        print(f"{bundle_path.stem:48s} {ours['per_second']:8.0f}/s p50 {ours['p50_ms']:6.2f} ms "
              f"p99 {ours['p99_ms']:6.2f} ms | raw {floor['per_second']:8.0f}/s | ratio {rows[-1]['ratio']}")
    ratios = [r["ratio"] for r in rows]
    typical = json.loads(Path(default_samples_dir() / "20-concordant-imaging-epidural.json").read_text())
    for _ in range(1000):
        evaluator.evaluate(typical, date(2026, 11, 22))
    before = rss_mb()
    start = time.perf_counter()
    for _ in range(args.memory_evaluations):
        evaluator.evaluate(typical, date(2026, 11, 22))
    elapsed = time.perf_counter() - start
    after = rss_mb()
    results = {
        "machine": {"cpus": os.cpu_count(), "python": os.sys.version.split()[0]},
        "ruleset": evaluator.ruleset.identity(),
        "samples": rows,
        "overhead_ratio": {"median": round(statistics.median(ratios), 2), "max": max(ratios),
                           "definition": "evaluation time / raw durable time, same rules, same facts"},
        "memory": {"evaluations": args.memory_evaluations, "rss_before_mb": round(before, 1),
                   "rss_after_mb": round(after, 1), "growth_mb": round(after - before, 1),
                   "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                   "evaluations_per_second": round(args.memory_evaluations / elapsed, 1)},
    }
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\noverhead ratio median {results['overhead_ratio']['median']}, max {results['overhead_ratio']['max']}")
    print(f"memory: {before:.1f} MB -> {after:.1f} MB over {args.memory_evaluations} evaluations "
          f"({results['memory']['evaluations_per_second']}/s)")
    print(f"written to {OUT}")


if __name__ == "__main__":
    main()
