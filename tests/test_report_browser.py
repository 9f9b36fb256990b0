"""The report in a real browser: headless Chromium runs the inlined plotly.js offline and draws every figure.

Skipped where Chromium is missing, except in CI (env CI set), where a missing browser is a failure:
CI installs it (`apt-get install -y chromium`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from optuna.trial import TrialState, create_trial
from test_report import _rejected, _study, synthetic_study

from nas20k.readers.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# After plotly drew: where the trials table's reason column ends, against the window's width (in the dumped title).
MEASURE = """<script>window.addEventListener("load", () => setTimeout(() => { document.title = JSON.stringify({
  reason: document.querySelector("#trials-table td:nth-child(3)").getBoundingClientRect().right,
  width: window.innerWidth, heading: document.querySelector("#trials-table th:nth-child(3)").textContent}); }, 0));
</script>\n</body>"""


@pytest.fixture(scope="module")
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; CI must `apt-get install -y chromium`")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return CHROMIUM


def _render(chromium: str, page: Path, tmp: Path) -> tuple[str, str]:
    """The DOM after the page's scripts ran (offline: no network), and the browser's log (console errors)."""
    r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                        f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=20000", "--window-size=1280,4000",
                        "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout, r.stderr


def _graphs(dom: str) -> list[str]:
    """Each figure's part of the DOM, from its div to the next figure's."""
    return dom.split('class="plotly-graph-div')[1:]


@pytest.mark.slow
def test_every_figure_is_drawn_and_the_reason_column_is_in_view(chromium: str, tmp_path: Path) -> None:
    page = write_report(synthetic_study(30), tmp_path / "report.html")
    page.write_text(page.read_text(encoding="utf-8").replace("</body>", MEASURE), encoding="utf-8")
    dom, log = _render(chromium, page, tmp_path)
    graphs = _graphs(dom)
    assert len(graphs) == 5
    for graph in graphs:
        assert 'class="main-svg"' in graph and "js-plotly-plot" in graph[:200]  # plotly drew it
        assert re.search(r'class="(scatterlayer|barlayer)', graph)  # with its data layer
    assert "Uncaught" not in log, log[-2000:]
    body = dom.split('id="trials-table"', 1)[1].split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    assert body.count("<tr>") == 30
    measured = json.loads(re.search(r"<title>(\{.*?\})</title>", dom).group(1).replace("&quot;", '"'))
    assert measured["heading"] == "reason" and measured["reason"] <= measured["width"]  # never cut off


@pytest.mark.slow
def test_an_empty_study_draws_no_axis(chromium: str, tmp_path: Path) -> None:
    study = _study([_rejected(25000), _rejected(None), create_trial(state=TrialState.FAIL)])
    page = write_report(study, tmp_path / "empty.html")
    dom, log = _render(chromium, page, tmp_path)
    assert 'class="main-svg"' not in dom and not _graphs(dom)
    assert "No trained trial yet" in dom and "Uncaught" not in log
