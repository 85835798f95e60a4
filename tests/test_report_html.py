"""detect.py --report: a self-contained page (no script, nothing fetched), hostile names
escaped, and a real headless Chromium renders it to a screenshot that is not blank."""

import shutil
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest

from exfil.report_html import render_report


def _report(domain: str) -> dict:
    alert = {"domain": domain, "queries": 40, "responses": 40, "unique_names": 40,
             "estimated_bytes_exfiltrated": 2000, "first_seen": "2026-01-01T00:00:00.000Z",
             "last_seen": "2026-01-01T00:05:00.000Z", "clients": ["10.0.0.66"],
             "per_client": [{"client": "10.0.0.66", "queries": 40, "responses": 40,
                             "unique_names": 40, "bytes": 9000}],
             "score": "mean score 0.990 of flagged packets, far above the threshold 0.100",
             "examples": [f"<script>alert(1)</script>.{domain}"], "why": ["entropy 4.1"],
             "timeline": [["2026-01-01T00:00:00.000Z", 30, 6000],
                          ["2026-01-01T00:01:00.000Z", 50, 3000]]}  # fmt: skip
    return {"model": "pretrained/clf.pt", "threshold": 0.1, "alerts": [alert],
            "near_misses": [{"domain": "close.example", "distinct_flagged_names": 3,
                             "flagged_packets": 3, "domain_packets": 9,
                             "why_not": "3 distinct flagged names < 5"}],
            "suppressed": [{"domain": "sophosxl.net", "reason": "Sophos look-ups",
                            "queries": 4, "unique_names": 2}]}  # fmt: skip


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):  # noqa: ANN001, ANN201
        self.tags.append(tag)
        self.links += [v for k, v in attrs if k in ("src", "href") and v]

    def handle_data(self, data):  # noqa: ANN001, ANN201
        self.text.append(data)


def test_page_is_self_contained_and_escapes_hostile_names():
    histogram = np.zeros(50, np.int64)
    histogram[0], histogram[49] = 10_000, 80
    page = render_report(_report("evil.net"), histogram)
    parsed = _Collect()
    parsed.feed(page)
    assert "script" not in parsed.tags and not parsed.links  # nothing runs, nothing fetched
    text = "".join(parsed.text)
    assert "<script>alert(1)</script>.evil.net" in text  # shown as text, escaped in the source
    for needed in ("evil.net", "close.example", "sophosxl.net", "threshold", "10,080 DNS"):
        assert needed in text, needed
    assert parsed.tags.count("svg") == 4  # packets, bytes, clients per alert; the histogram
    assert parsed.tags.count("rect") == 2 + 2 + 1 + 50


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run "
                    "installs it as root; without it the page cannot be rendered)")  # fmt: skip
def test_chromium_renders_the_page_to_a_screenshot_that_is_not_blank(tmp_path):
    from matplotlib.image import imread

    histogram = np.zeros(50, np.int64)
    histogram[:5] = [9000, 800, 90, 9, 1]
    page = tmp_path / "report.html"
    page.write_text(render_report(_report("evil.net"), histogram), encoding="utf-8")
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--screenshot={shot}", "--window-size=1000,1400", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shot.exists(), done.stderr[-2000:]
    pixels = imread(shot)[..., :3]
    colours = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50  # text, bars and lines, not one flat colour
    blue = (np.abs(pixels - np.array([0x1F, 0x77, 0xB4]) / 255).sum(axis=2) < 0.1).mean()
    assert blue > 0.002, blue  # the bars were drawn
    print(sys.executable, shot)
