"""The HTML report: size and generation time for 1, 10 and 100 runs, and the
README's screenshot, taken by Debian's headless chromium of a real report.

The runs are SQuALITY stories summarized by both workflows and the
extractive baseline, scored with ROUGE, the coverage profile and the two
LLM-judged metrics (a scripted judge: see tests/report_runs.py); 10 and 100
runs are copies of those under new ids.

    python bench/bench_report.py [--screenshot docs/report.png]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from benchlib import ROOT, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--screenshot", type=Path, default=None, help="also save a screenshot of the 3-run report")
    args = parser.parse_args()
    from report_runs import fill_store
    from test_report import copy_runs

    from pipelines.report import write_report
    from pipelines.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="longsum-bench-report-"))
    store = Store(tmp / "runs.duckdb")
    started = time.perf_counter()
    run_ids = fill_store(store, stories=1)
    print(f"3 runs summarized and scored in {time.perf_counter() - started:.1f} s")
    rows = []
    for n in (1, 10, 100):
        target = Store(tmp / f"copies-{n}.duckdb")
        with target.held():
            ids = copy_runs(store, target, run_ids, n)
        started = time.perf_counter()
        path = write_report(target, ids, tmp / f"report-{n}.html")
        rows.append([n, f"{path.stat().st_size / 1e6:.2f}", f"{time.perf_counter() - started:.1f}"])
    print(table(["runs", "MB", "seconds"], rows))
    if args.screenshot:
        path = write_report(store, run_ids, tmp / "report.html", title="longsum report: one SQuALITY story, three methods")
        screenshot(path, args.screenshot)
        print(f"screenshot: {args.screenshot}")


def screenshot(page_path: Path, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1100, "height": 1400})
        page.goto(page_path.as_uri())
        page.locator(".sentence.coherence").first.hover()  # show a note, as a reader would
        out.parent.mkdir(parents=True, exist_ok=True)
        height = min(2400, page.evaluate("document.body.scrollHeight"))
        page.screenshot(path=str(out), full_page=True, clip={"x": 0, "y": 0, "width": 1100, "height": height})
        browser.close()


if __name__ == "__main__":
    main()
