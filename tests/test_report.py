"""report.html, `clustersim report` and `clustersim compare`; the report in headless Chromium."""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from clustersim import cli
from clustersim.metrics.timeline import TIMELINE_COLUMNS, window_slo_summary
from clustersim.results.plots import PLOT_SIZES_PX

# Llama-3.1-8B on TP2 (so links carry all-reduce traffic), bursty MMPP arrivals.
EXPERIMENT = """\
name: rep
seed: 4
model: llama-3.1-8b
topology: dgx_h100_x1
layout: {tp: 2}
workload:
  arrival: {process: mmpp, rates_rps: [10, 120], mean_dwell_s: [8, 2]}
  prompt_tokens: {dist: uniform, min: 256, max: 2048}
  output_tokens: {dist: uniform, min: 16, max: 128}
horizon: {duration_s: 40, warmup_s: 2}
slo: {ttft_p99_s: 0.3, tpot_p99_s: 0.02}
output: {time_bin_s: 2}
"""
SWEEP = EXPERIMENT.replace("name: rep", "name: rep_sweep") + (
    "sweep:\n  workload.arrival.rates_rps: [[10, 20], [10, 120]]\n"
)
RUN_PLOTS = {"latency_cdf", "latency_timeline", "queue_kv", "link_heatmap"}


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("clustersim: error: ")
    return lines[0]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One plain run and one 2-point sweep, written by `clustersim run`."""
    root = tmp_path_factory.mktemp("results")
    for name, text in (("rep.yaml", EXPERIMENT), ("rep_sweep.yaml", SWEEP)):
        (root / name).write_text(text)
        assert cli.main(["run", str(root / name), "--quiet", "--out", str(root)]) == 0
    return root


@pytest.fixture(scope="module")
def run_dir(results: Path) -> Path:
    (path,) = (results / "rep").iterdir()
    return path


@pytest.fixture(scope="module")
def sweep_dir(results: Path) -> Path:
    (path,) = (results / "rep_sweep").iterdir()
    return path


# --------------------------------------------------------------------------- run directory


def test_run_writes_timeline_plots_and_report(run_dir: Path) -> None:
    names = {p.name for p in run_dir.iterdir()}
    assert {"timeline.parquet", "report.html"} <= names
    assert {f"{n}.png" for n in RUN_PLOTS} <= names
    assert "expert_heatmap.png" not in names  # dense model: no experts.parquet
    assert not [n for n in names if n.startswith(".")]
    for name in RUN_PLOTS:
        assert png_size((run_dir / f"{name}.png").read_bytes()) == PLOT_SIZES_PX[name]
    timeline = pd.read_parquet(run_dir / "timeline.parquet")
    assert list(timeline.columns) == list(TIMELINE_COLUMNS)
    requests = pd.read_parquet(run_dir / "requests.parquet")
    assert timeline["arrivals"].sum() == requests["arrival_s"].notna().sum()
    assert (timeline["burst_fraction"] > 0).any()  # MMPP phases reached the timeline
    summary = json.loads((run_dir / "summary.json").read_text())
    windows = window_slo_summary(timeline)
    for key, value in windows.items():
        assert summary["slo"][key] == pytest.approx(value)


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text of <style> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


URL_ATTRIBUTES = {"src", "href", "srcset", "poster", "action", "formaction", "data", "background"}


def test_report_html_is_self_contained(run_dir: Path) -> None:
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    parser = Tags()
    parser.feed(text)
    tags = {t for t, _ in parser.tags}
    assert not tags & {"script", "link", "iframe", "object", "embed", "base", "form"}
    for _, attrs in parser.tags:
        for name, value in attrs.items():
            assert not name.startswith("on"), name  # no inline event handlers
            if name in URL_ATTRIBUTES:
                assert value.startswith("data:"), (name, value[:80])
    css = "".join(parser.styles)
    assert "url(" not in css and "@import" not in css
    assert "http://" not in text and "https://" not in text
    images = [a["src"] for t, a in parser.tags if t == "img"]
    assert len(images) == len(RUN_PLOTS)
    embedded = {base64.b64decode(src.split(",", 1)[1]) for src in images}
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert embedded == {(run_dir / f"{n}.png").read_bytes() for n in RUN_PLOTS}


def test_report_states_the_verdict_and_the_worst_window(run_dir: Path) -> None:
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    summary = json.loads((run_dir / "summary.json").read_text())
    met = summary["slo"]["attainment"] >= 0.99
    assert ("SLO met" in text) == met and ("SLO NOT met" in text) == (not met)
    worst = summary["slo"]["worst_window_start_s"]
    assert f"Worst window: t = {worst:.4g}–{worst + 2:.4g} s" in text
    assert "TTFT ≤ 0.3 s: p99 = " in text and "TPOT ≤ 0.02 s: p99 = " in text
    assert "config.resolved.yaml" in text and "llama-3.1-8b" in text
    assert "slo.windows_violating" in text


def test_report_command_redraws_the_same_files(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    drawn = [*[f"{n}.png" for n in RUN_PLOTS], "report.html"]
    for name in drawn:
        (copy / name).unlink()
    assert cli.main(["report", str(copy)]) == 0
    for name in drawn[:-1]:  # same files + same code ⇒ byte-identical plots
        assert (copy / name).read_bytes() == (run_dir / name).read_bytes(), name
    again = (copy / "report.html").read_text(encoding="utf-8")  # … and report, but its path
    assert again == (run_dir / "report.html").read_text(encoding="utf-8").replace(
        str(run_dir), str(copy)
    )
    (copy / "timeline.parquet").unlink()  # a run from before timeline.parquet existed
    assert cli.main(["report", str(copy)]) == 0
    assert (
        png_size((copy / "latency_timeline.png").read_bytes()) == PLOT_SIZES_PX["latency_timeline"]
    )


def test_report_bad_paths_are_exit_2(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    (broken / "requests.parquet").write_bytes(b"not parquet")
    bad_json = tmp_path / "bad_json"
    shutil.copytree(run_dir, bad_json)
    (bad_json / "summary.json").write_text("{")
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    for target, words in (
        (tmp_path / "missing", "no such directory"),
        (tmp_path / "file.txt", "no such directory"),
        (tmp_path / "empty", "no summary.json"),
        (broken, "requests.parquet: cannot read"),
        (bad_json, "summary.json: cannot read"),
    ):
        assert cli.main(["report", str(target)]) == 2, target
        line = one_error_line(capsys.readouterr().err)
        assert str(target) in line and words in line, line


def test_no_report_flag_skips_drawing(tmp_path: Path) -> None:
    (tmp_path / "e.yaml").write_text(EXPERIMENT.replace("duration_s: 40", "duration_s: 5"))
    out = tmp_path / "r"
    assert cli.main(["run", str(tmp_path / "e.yaml"), "--quiet", "--no-report", "--out",
                     str(out)]) == 0  # fmt: skip
    (run,) = (out / "rep").iterdir()
    names = {p.name for p in run.iterdir()}
    assert "timeline.parquet" in names and "report.html" not in names
    assert not [n for n in names if n.endswith(".png")]


# --------------------------------------------------------------------------- sweeps


def test_sweep_directory_gets_plots_and_report(sweep_dir: Path) -> None:
    names = {p.name for p in sweep_dir.iterdir()}
    assert {"report.html", "sweep_workload.arrival.rates_rps.png", "latency_cdf.png",
            "latency_timeline.png"} <= names  # fmt: skip
    sweep_png = (sweep_dir / "sweep_workload.arrival.rates_rps.png").read_bytes()
    assert png_size(sweep_png) == PLOT_SIZES_PX["sweep"]
    table = pd.read_csv(sweep_dir / "sweep.csv")
    assert {"worst_window_attainment", "windows_violating"} <= set(table.columns)
    for label in table["label"]:
        assert (sweep_dir / label / "report.html").is_file()
    text = (sweep_dir / "report.html").read_text(encoding="utf-8")
    assert "<script" not in text and "http" not in text
    assert all(label in text for label in table["label"])


def test_report_command_on_a_sweep_redraws_every_point(sweep_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "sweep"
    shutil.copytree(sweep_dir, copy)
    for report in copy.rglob("report.html"):
        report.unlink()
    assert cli.main(["report", str(copy)]) == 0
    assert len(list(copy.rglob("report.html"))) == 3  # the sweep + 2 points


# --------------------------------------------------------------------------- compare


def test_compare_prints_differences_and_writes_a_new_directory(
    sweep_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = (sweep_dir / label for label in pd.read_csv(sweep_dir / "sweep.csv")["label"])
    out = tmp_path / "cmp"
    assert cli.main(["compare", str(a), str(b), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert f"A = {a}" in stdout and f"B = {b}" in stdout
    assert "ttft_s.p99" in stdout and "slo.worst_window_attainment" in stdout
    report_line = stdout.strip().splitlines()[-1]
    assert report_line.startswith("comparison report: ")
    report = Path(report_line.removeprefix("comparison report: "))
    first = report.parent
    assert first.parent == out and first.name.startswith(f"compare-{a.name}-vs-{b.name}-")
    assert {p.name for p in first.iterdir()} == {
        "report.html", "comparison.csv", "latency_cdf.png", "latency_timeline.png"
    }  # fmt: skip
    table = pd.read_csv(first / "comparison.csv").set_index("key")
    sa = json.loads((a / "summary.json").read_text())
    sb = json.loads((b / "summary.json").read_text())
    row = table.loc["ttft_s.p99"]
    assert float(row["diff"]) == pytest.approx(sb["ttft_s"]["p99"] - sa["ttft_s"]["p99"])
    assert float(row["pct_diff"]) == pytest.approx(
        100 * (sb["ttft_s"]["p99"] - sa["ttft_s"]["p99"]) / sa["ttft_s"]["p99"]
    )
    html = report.read_text(encoding="utf-8")
    assert "workload.arrival.rates_rps" in html  # what differs in the configuration
    assert "<script" not in html and "http" not in html
    # never overwritten: a second comparison gets a directory of its own
    assert cli.main(["compare", str(a), str(b), "--out", str(out)]) == 0
    capsys.readouterr()
    assert len(list(out.iterdir())) == 2
    # default location: next to A
    assert cli.main(["compare", str(a), str(b)]) == 0
    default = Path(capsys.readouterr().out.strip().splitlines()[-1].split(": ", 1)[1]).parent
    assert default.parent == a.parent
    shutil.rmtree(default)


def test_compare_bad_paths_are_exit_2(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    for args in (
        [str(run_dir), str(tmp_path / "missing")],
        [str(tmp_path / "file"), str(run_dir)],
        [str(run_dir), str(tmp_path / "empty")],
        [str(run_dir), str(run_dir), "--out", str(tmp_path / "file")],
    ):
        assert cli.main(["compare", *args]) == 2, args
        one_error_line(capsys.readouterr().err)
    assert not list((tmp_path / "empty").iterdir())  # nothing written into a bad run dir


# --------------------------------------------------------------------------- Chromium

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # nothing can resolve, should anything try
)  # fmt: skip
# Appended to a *copy* of the report (the report itself has no script): after load, writes
# each image's decoded size (or "broken") into a body attribute that --dump-dom prints.
IMAGE_PROBE = """<script>
window.addEventListener("load", () => {
  const sizes = Array.from(document.images).map(
    (i) => (i.complete && i.naturalWidth > 0 ? i.naturalWidth + "x" + i.naturalHeight : "broken"));
  document.body.setAttribute("data-images", sizes.join(","));
});
</script>"""


def chromium_or_skip() -> str:
    """The Chromium binary; skip without one, except in CI (env CI set), where it must run."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("headless Chromium is required in CI (.ci/run installs Debian's chromium)")
    pytest.skip("chromium not installed (apt-get install -y chromium)")


def run_chromium(binary: str, page: Path, tmp: Path, *extra: str) -> str:
    """Load `page` headless (fresh profile), stdout back; 10 s of virtual time to settle."""
    profile = tmp / f"profile-{page.stem}"
    command = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
               "--virtual-time-budget=10000", *extra, page.resolve().as_uri()]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def page_requests(netlog: Path) -> list[str]:
    """URLs of the URL requests the *page* started (Chromium's own background requests,
    e.g. update checks, have no file:// isolation key and an initiator of 'not an origin')."""
    text = netlog.read_text(encoding="utf-8").rstrip().rstrip(",")
    try:
        log = json.loads(text)
    except json.JSONDecodeError:  # a log cut short: close the events list and the object
        log = json.loads(text + "]}")
    names = {code: name for name, code in log["constants"]["logEventTypes"].items()}
    urls = []
    for event in log["events"]:
        params = event.get("params") or {}
        if names.get(event["type"]) != "URL_REQUEST_START_JOB" or "url" not in params:
            continue
        key = str(params.get("network_isolation_key", ""))
        initiator = str(params.get("initiator", ""))
        if key.startswith("file://") or initiator == "null" or initiator.startswith("file:"):
            urls.append(str(params["url"]))
    return urls


def test_report_renders_in_chromium_with_every_image(run_dir: Path, tmp_path: Path) -> None:
    binary = chromium_or_skip()
    probe = tmp_path / "probe.html"
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    probe.write_text(text.replace("</body>", IMAGE_PROBE + "</body>"), encoding="utf-8")
    dom = run_chromium(binary, probe, tmp_path, "--dump-dom")
    marker = 'data-images="'
    assert marker in dom, dom[:500]
    sizes = dom.split(marker, 1)[1].split('"', 1)[0].split(",")
    expected = sorted(f"{w}x{h}" for n, (w, h) in PLOT_SIZES_PX.items() if n in RUN_PLOTS)
    assert sorted(sizes) == expected  # every image decoded, at its natural size
    shot = tmp_path / "shot.png"
    run_chromium(binary, run_dir / "report.html", tmp_path, f"--screenshot={shot}",
                 "--window-size=1200,2000")  # fmt: skip
    assert png_size(shot.read_bytes()) == (1200, 2000)


def test_report_makes_no_network_request(run_dir: Path, tmp_path: Path) -> None:
    binary = chromium_or_skip()
    # the check itself must see a page's requests: a control page with two remote images
    control = tmp_path / "control.html"
    control.write_text('<html><body><img src="http://example.com/a.png">'
                       '<img src="https://cdn.example.org/b.png"></body></html>')  # fmt: skip
    control_log = tmp_path / "control.netlog.json"
    run_chromium(binary, control, tmp_path, f"--log-net-log={control_log}")
    seen = page_requests(control_log)
    assert "http://example.com/a.png" in seen and "https://cdn.example.org/b.png" in seen
    netlog = tmp_path / "report.netlog.json"
    run_chromium(binary, run_dir / "report.html", tmp_path, f"--log-net-log={netlog}")
    requests = page_requests(netlog)
    assert all(url.startswith(("data:", "file:")) for url in requests), requests
