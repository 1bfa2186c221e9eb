"""compress bench (latency and artifact accuracy per machine and shape) and compress report (HTML)."""

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from compress.configs import QuantizeConfig
from compress.errors import UserError
from compress.runtime.export import export
from compress.stages.bench import bench, bench_in_turn, parse_shapes
from compress.stages.quantize import quantize
from compress.stages.report import pareto_front, render
from compress.variant import Variant

SHAPES = [(1, 16), (4, 32)]


@pytest.fixture(scope="module")
def measured_workspace(trained_teacher, tmp_path_factory):
    """A copy of the tiny teacher, exported, its int8 variant, and a torch-int8 one left unmeasured."""
    teacher, _ = trained_teacher
    workspace = tmp_path_factory.mktemp("bench") / "ws"
    shutil.copytree(teacher.path, workspace / "teachers" / "tiny" / "reviews")
    copy = export(Variant.load(workspace / "teachers" / "tiny" / "reviews"))
    int8 = quantize(copy)
    unmeasured = quantize(copy, QuantizeConfig(backend="torch"))
    bench(copy, SHAPES, threads=1)
    bench(int8, SHAPES, threads=1)
    return workspace, copy, int8, unmeasured


def test_shapes_parse_and_bad_shapes_are_clear():
    assert parse_shapes("1x32, 32X128") == [(1, 32), (32, 128)]
    for bad in ("1x", "x32", "0x32", "1x99999", "one"):
        with pytest.raises(UserError, match="--shapes|out of range"):
            parse_shapes(bad)


def test_bench_writes_sane_numbers_keyed_by_machine_and_shape(measured_workspace):
    _, teacher, int8, _ = measured_workspace
    for variant, runtimes in ((teacher, {"ort-cpu", "torch-cpu"}), (int8, {"ort-cpu"})):
        entries = Variant.load(variant.path).benches
        (key, entry), = entries.items()
        assert "| 1 threads | cpu" in key and entry["machine"]["threads"] == 1
        assert set(entry["latency_ms"]) == runtimes
        for by_shape in entry["latency_ms"].values():
            assert set(by_shape) == {"1x16", "4x32"}
            for timing in by_shape.values():
                assert 0 < timing["p50"] <= timing["p90"] and timing["runs"] >= 30
                assert timing["examples_per_s"] > 0
        assert entry["dev"]["accuracy"] >= 0.9
    assert Variant.load(int8.path).benches[key]["accuracy_from"].startswith("onnx")
    assert "bench" not in Variant.load(int8.path).meta  # measurements are files of their own: bench/*.json


def test_bench_refuses_what_it_cannot_measure(measured_workspace, tmp_path):
    _, teacher, _, _ = measured_workspace
    with pytest.raises(UserError, match="--runs 5 is outside \\[30, 100000\\]"):
        bench(teacher, SHAPES, runs=5)
    with pytest.raises(UserError, match="--shapes sequence 1024 is outside"):
        bench(teacher, [(1, 1024)])


def test_pareto_front_on_fixed_numbers():
    points = [(10.0, 0.90), (5.0, 0.85), (20.0, 0.92), (6.0, 0.80), (12.0, 0.89), (5.0, 0.84), (30.0, 0.92)]
    assert pareto_front(points) == [1, 0, 2]
    assert pareto_front([(1.0, 0.5)]) == [0]
    assert pareto_front([]) == []


class Page(HTMLParser):
    """Counts the rows of the variants table and the inline SVG plots."""

    def __init__(self):
        super().__init__()
        self.rows, self.svgs, self.in_body, self.table = 0, 0, False, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.table = dict(attrs).get("id")
        if tag == "tbody" and self.table == "variants":
            self.in_body = True
        if tag == "tr" and self.in_body:
            self.rows += 1
        if tag == "svg":
            self.svgs += 1

    def handle_endtag(self, tag):
        if tag == "tbody":
            self.in_body = False


def test_report_renders_one_row_per_variant_with_the_plots(measured_workspace, tmp_path):
    workspace, _, _, unmeasured = measured_workspace
    out = render(workspace, out=tmp_path / "report.html")
    page = out.read_text()
    parser = Page()
    parser.feed(page)
    assert parser.rows == 3  # teacher, int8, torch-int8
    assert parser.svgs == 4  # 2 runtimes of the teacher x 2 shapes; int8 shares the ORT plots
    assert "tiny-torch-int8" in page and "not measured" in page
    assert "Pareto frontier" in page
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:|//)', page)  # opens offline: nothing fetched
    assert unmeasured.meta["command"].split()[0] == "compress"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_report_of_an_empty_workspace_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="no variants in"):
        render(tmp_path)


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Debian's chromium is not installed")
def test_report_renders_in_headless_chromium(measured_workspace, tmp_path):
    workspace, _, _, _ = measured_workspace
    out = render(workspace, out=tmp_path / "report.html")
    png = tmp_path / "report.png"
    subprocess.run(["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1366,2400",
                    f"--screenshot={png}", out.as_uri()], check=True, capture_output=True, timeout=120)
    assert png.stat().st_size > 20_000  # a rendered page, not a blank one


def test_bench_and_report_commands(run_cli, measured_workspace, tmp_path):
    workspace, teacher, _, _ = measured_workspace
    code, out, err = run_cli("--workspace", workspace, "bench", teacher.path, "--shapes", "1x16", "--threads", "1")
    assert code == 0, err
    assert "ort-cpu 1x16" in out and "torch-cpu 1x16" in out
    code, out, err = run_cli("--workspace", workspace, "report", "--out", tmp_path / "r.html")
    assert code == 0 and (tmp_path / "r.html").is_file(), err
    code, _, err = run_cli("--workspace", workspace, "bench", "--shapes", "1by16")
    assert code == 2 and "--shapes takes BATCHxSEQUENCE" in err


def test_variants_are_timed_again_in_turn(run_cli, measured_workspace, tmp_path):
    """--rounds: every artifact timed once per round, so a slow spell of the machine falls on all of them."""
    old, teacher, int8, _ = measured_workspace
    workspace = shutil.copytree(old, tmp_path / "ws")
    paths = [workspace / v.path.relative_to(old) for v in (teacher, int8)]
    code, out, err = run_cli("--workspace", workspace, "bench", *paths, "--shapes", "1x16", "--threads", "1",
                             "--rounds", "3")
    assert code == 0, err
    assert "ONNX Runtime timed again in turn, 3 rounds of 30 runs: 2 variants" in out
    for path in paths:
        (entry,) = Variant.load(path).benches.values()
        timing = entry["latency_ms"]["ort-cpu"]["1x16"]
        assert timing["rounds"] == 3 and timing["runs"] == 90 and 0 < timing["p50"] <= timing["p90"]
        assert "rounds" not in entry["latency_ms"]["ort-cpu"]["4x32"]  # a shape not asked for keeps its figure
        blocks = [h for h in entry["history"] if (h.get("runtime"), h.get("shape")) == ("ort-cpu", "1x16")]
        assert blocks and "rounds" not in blocks[-1]  # this pass's own block of runs, kept in the history
    code, _, err = run_cli("--workspace", workspace, "bench", paths[0], "--device", "cuda", "--rounds", "2")
    assert code == 2 and "--rounds times ONNX Runtime in turn on the CPU" in err
    with pytest.raises(UserError, match="--rounds 0 is outside"):
        bench_in_turn([Variant.load(paths[0])], [(1, 16)], rounds=0)


def test_a_moved_workspace_still_lists_benches_and_reports(run_cli, measured_workspace, tmp_path, monkeypatch):
    """`cp -r ws ws2`, then work from elsewhere: lineage is recorded inside the workspace, never as a path to it."""
    workspace, _, _, unmeasured = measured_workspace
    moved = shutil.copytree(workspace, tmp_path / "ws2")
    records = [p.read_text() for p in moved.rglob("*.json")]
    assert records and not any(str(workspace) in text for text in records)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("--workspace", "ws2", "list")
    rows = {line.split()[0]: line.split()[1:3] for line in out.splitlines()[1:]}
    assert code == 0 and "BROKEN" not in out, (out, err)
    assert rows["students/tiny/reviews/tiny-torch-int8"] == ["quantize", "teachers/tiny/reviews"]
    assert rows["teachers/tiny/reviews"] == ["teacher", "-"]
    torch_int8 = moved / unmeasured.path.relative_to(workspace)
    code, _, err = run_cli("--workspace", "ws2", "bench", torch_int8, "--shapes", "1x16", "--threads", "1")
    assert code == 0, err  # re-quantizes its parent, found inside ws2
    code, out, err = run_cli("--workspace", "ws2", "report", "--out", tmp_path / "moved.html")
    assert code == 0, err
    page = (tmp_path / "moved.html").read_text()
    assert "tiny → tiny-torch-int8" in page and "tiny → tiny-int8-dynamic" in page
