"""Page latency of the web pages on a trail of N web evaluations (SQLite in a temporary directory).

    .venv/bin/python -m tests.web.measure_pages [N]     # default 2000; writes test-output/web-pages.json

Fills the trail through the review use case (the samples in turn), then
times each page five times through Flask's test client (no network) and
reports the median. A figure, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cds.api import create_app
from cds.web.users import WebUser
from tests.web.conftest import ROOT, SAMPLES, FormClient, web_config


def main(count: int) -> dict[str, object]:
    app = create_app(web_config(Path(tempfile.mkdtemp(prefix="cds-web-measure-"))))
    forms = FormClient(app)
    forms.sign_in("carol")
    review = app.extensions["cds_web"].review
    carol = WebUser("carol", frozenset({"clinician", "auditor"}))
    bodies = [p.read_bytes() for p in sorted(SAMPLES.glob("*.json")) if not p.name.endswith(".expected.json")]
    started = time.perf_counter()
    ids = [review.evaluate_bundle(bodies[i % len(bodies)], carol) for i in range(count)]
    fill = time.perf_counter() - started
    pages = {"review": f"/web/review/{ids[-1]}", "audit list": "/web/audit/",
             "audit evaluation": f"/web/audit/evaluations/{ids[-1]}",
             "rule usage": "/web/audit/rules?since=2026-11-01&until=2026-11-30",
             "chain (full verify)": "/web/audit/chain"}
    medians = {}
    for name, path in pages.items():
        times = []
        for _ in range(5):
            t = time.perf_counter()
            assert forms.get(path).status_code == 200, path
            times.append(time.perf_counter() - t)
        medians[name] = round(statistics.median(times) * 1000, 1)
    return {"records": count, "fill_per_second": round(count / fill), "median_ms": medians}


if __name__ == "__main__":
    result = main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
    out = ROOT / "test-output" / "web-pages.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
