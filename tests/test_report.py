"""pipeline.commands.report: the HTML report links only to files that exist; gallery order; compare_runs trains, reuses, scores."""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fake_run import CLASSES, PER_IMAGE, make_config, make_run
from pipeline.io import read_json, save_image, save_mask
from pipeline.stage import Record
from pipeline.commands.report import compare_runs, network_truth, write_report
from pipeline.commands.report_plots import relative_scores
from pipeline.commands.trained import RunError



class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.targets: list[str] = []
        self.alts: list[str] = []
        self.external: list[str] = []  # <script>, <link rel=stylesheet> or absolute URLs

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.targets.append(a["src"])
            self.alts.append(a.get("alt", ""))
        elif tag == "a":
            self.targets.append(a["href"])
        if tag in ("script", "link") or any("://" in (v or "") for v in a.values()):
            self.external.append(tag)


def check_links(html_path: Path) -> Links:
    parser = Links()
    parser.feed(html_path.read_text(encoding="utf-8"))
    assert parser.targets and not parser.external
    for target in parser.targets:
        assert not target.startswith("/") and (html_path.parent / target).is_file(), target
    return parser


def test_report_without_full_reference(tmp_path):
    run_dir, _ = make_run(tmp_path)
    path = write_report(run_dir, tmp_path / "report", full_metrics=None, gallery=1)
    links = check_links(path)
    text = path.read_text()
    assert "No fully supervised reference was given" in text
    assert not (tmp_path / "report" / "per_class.png").exists()
    # best image of the final stage (per-image Jaccard a 0.9, c 0.6, d 0.4, b 0.2) is a, the worst is b
    assert [t for t in links.targets if t.startswith("gallery")] == ["gallery_best_1.png"] * 2 + \
        ["gallery_worst_1.png"] * 2
    best, worst = max(PER_IMAGE, key=PER_IMAGE.get), min(PER_IMAGE, key=PER_IMAGE.get)
    assert (best, worst) == ("a", "b")
    assert [a for a in links.alts if a.startswith(("best", "worst"))] == ["best 1: a", "worst 1: b"]
    with Image.open(tmp_path / "report" / "gallery_best_1.png") as im:
        assert im.width > 3 * im.height  # one row of five panels
    assert "<td>round1/crf</td><td>4</td><td>4</td><td>0.5500</td><td>0.5000</td>" in text


def test_report_with_full_reference_and_gallery_bounds(tmp_path):
    run_dir, _ = make_run(tmp_path)
    full = {"miou": 0.8, "per_class_iou": {"background": 0.95, "square": 0.8, "bar": 0.5}}
    weak = {"miou": 0.4, "per_class_iou": {"background": 0.9, "square": 0.2, "bar": None}}
    path = write_report(run_dir, tmp_path / "r", full_metrics=full, weak_metrics=weak, gallery=10)
    check_links(path)
    text = path.read_text()
    assert "<td>mIoU</td><td>0.4000</td><td>0.8000</td><td>50.0%</td>" in text
    assert "<td>square</td><td>0.2000</td><td>0.8000</td><td>25.0%</td>" in text
    assert "<td>bar</td><td>-</td><td>0.5000</td><td>-</td>" in text
    assert (tmp_path / "r" / "per_class.png").is_file() and (tmp_path / "r" / "weak_vs_full.png").is_file()
    # 4 images: all four are "best", none is left for "worst"
    assert sorted(p.name for p in (tmp_path / "r").glob("gallery_*")) == [f"gallery_best_{i}.png" for i in range(1, 5)]
    assert relative_scores(CLASSES, weak, full) == pytest.approx(
        {"mIoU": 50.0, "background": 100 * 0.9 / 0.95, "square": 25.0, "bar": None})


def test_compare_runs_trains_reuses_and_scores(tmp_path):
    run_dir, cfg = make_run(tmp_path)
    path = compare_runs(cfg)
    assert path == run_dir / "compare" / "report.html"
    check_links(path)
    ref = run_dir / "full_reference"
    full = read_json(ref / "metrics.json")
    weak = read_json(run_dir / "compare" / "weak_metrics.json")
    for m in (full, weak):
        assert m["images"] == 4 and 0.0 <= m["miou"] <= 1.0 and set(m["per_class_iou"]) == set(CLASSES)
    assert weak["weights"].endswith("round1/train/model.pt") and full["iterations"] == 2
    assert "<td>mIoU</td>" in path.read_text()
    stamp = (ref / "model.pt").stat().st_mtime_ns
    compare_runs(cfg)  # finished reference: reused, not retrained
    assert (ref / "model.pt").stat().st_mtime_ns == stamp
    compare_runs(cfg, full_iterations=3)  # other settings: trained again from scratch
    assert read_json(ref / "metrics.json")["iterations"] == 3
    log = (ref / "log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in log[1:]] == ["1", "2", "3"]


def test_compare_runs_with_a_foreground_network(tmp_path):
    cfg = make_config(tmp_path)
    cfg = dataclasses.replace(cfg, rounds=dataclasses.replace(cfg.rounds, foreground_network=True))
    run_dir, cfg = make_run(tmp_path, cfg)
    path = compare_runs(cfg)
    for m in (read_json(run_dir / "full_reference" / "metrics.json"), read_json(run_dir / "compare" / "weak_metrics.json")):
        assert set(m["per_class_iou"]) == {"background", "foreground"} and 0.0 <= m["fg_jaccard"] <= 1.0
    page = path.read_text()
    assert "<td>foreground</td>" in page and "<td>fg Jaccard (mean per image)</td>" in page


def test_network_truth_is_the_label_against_the_rest_for_a_foreground_network(tmp_path):
    cfg = make_config(tmp_path)
    gt = np.array([[0, 2, 2], [1, 255, 2]], np.uint8)
    save_mask(tmp_path / "gt.png", gt)
    save_image(tmp_path / "im.png", np.zeros((2, 3, 3), np.uint8))
    record = Record("im", tmp_path / "im.png", 2, tmp_path / "gt.png")
    assert (network_truth(record, cfg, 3) == gt).all()  # class-aware: the data set's ids
    fg = dataclasses.replace(cfg, rounds=dataclasses.replace(cfg.rounds, foreground_network=True))
    assert network_truth(record, fg, 3).tolist() == [[0, 1, 1], [0, 255, 1]]  # class 1 (another label) -> 0


def test_compare_runs_needs_a_finished_run(tmp_path):
    run_dir, cfg = make_run(tmp_path)
    (run_dir / "scores.json").unlink()
    with pytest.raises(RunError, match=r"scores.json: not found: run `coarse2fine run` first"):
        compare_runs(cfg)
    with pytest.raises(RunError, match="run `coarse2fine run` first"):
        write_report(run_dir, tmp_path / "r", full_metrics=None)
    other = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, name="other"))
    with pytest.raises(RunError, match=r"other/scores.json: not found"):
        compare_runs(other)


def test_report_renders_in_headless_chromium(tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium / chromium-browser on PATH (apt-get install chromium) to render the report")
    run_dir, _ = make_run(tmp_path)
    full = {"miou": 0.8, "per_class_iou": {"background": 0.95, "square": 0.8, "bar": 0.5}}
    path = write_report(run_dir, tmp_path / "r", full_metrics=full, gallery=2)
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2400",
                    f"--screenshot={shot}", path.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    with Image.open(shot) as im:
        assert im.size == (1200, 2400)
        assert len(np.unique(np.asarray(im.convert("L")))) > 10  # not a blank page
