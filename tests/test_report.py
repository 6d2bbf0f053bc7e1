"""pipeline.commands.report: the HTML report links only to files that exist; gallery order. The full reference
(stages/reference.py, stages/compare.py through reference_run.run_reference): trains, resumes, reuses, retrains, scores."""
from __future__ import annotations

import ast
import dataclasses
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pipeline.commands.report
from fake_run import CLASSES, PER_IMAGE, make_config, make_run
from pipeline.commands.report import compare_report, write_report
from pipeline.commands.report_plots import relative_scores
from pipeline.commands.trained import RunError
from pipeline.data.weak import GroundTruthDataset, network_truth
from pipeline.io import read_json, save_image, save_mask
from pipeline.orchestration.reference_run import run_reference
from pipeline.stage import Record
from stages import WEAK_STAGES


def compare(cfg, **train) -> Path:
    """`coarse2fine compare` without the CLI: the reference steps through the runner, then the report."""
    if train:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train))
    run_reference(cfg, WEAK_STAGES)
    return compare_report(Path(cfg.run.root) / cfg.run.name)



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


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """A fake run compared once: (run_dir, cfg, report path, the reference's weights as trained then)."""
    run_dir, cfg = make_run(tmp_path_factory.mktemp("compared"))
    path = compare(cfg)
    return run_dir, cfg, path, torch.load(run_dir / "full_reference" / "model.pt", weights_only=True)


def test_compare_trains_reuses_retrains_and_scores(compared):
    run_dir, cfg, path, _ = compared
    assert path == run_dir / "compare" / "report.html"
    check_links(path)
    ref = run_dir / "full_reference"
    full = read_json(ref / "metrics.json")
    weak = read_json(run_dir / "compare" / "weak_metrics.json")
    assert read_json(run_dir / "compare" / "full_metrics.json") == full
    for m in (full, weak):
        assert m["images"] == 4 and 0.0 <= m["miou"] <= 1.0 and set(m["per_class_iou"]) == set(CLASSES)
    assert weak["weights"].endswith("round1/train/model.pt") and full["iterations"] == 2
    page = path.read_text()
    assert "<td>mIoU</td>" in page and "<td>fg Jaccard (mean per image)</td>" in page and "<td>square</td>" in page
    for step in (ref, run_dir / "compare"):  # the runner's contract: DONE holds the manifest's hash
        assert (step / "DONE").read_text().strip() == read_json(step / "manifest.json")["hash"]
    assert "train.iterations" in read_json(ref / "manifest.json")["config"]
    weak_file = run_dir / "compare" / "weak_metrics.json"
    stamps = {p: p.stat().st_mtime_ns for p in (ref / "model.pt", weak_file)}
    compare(cfg)  # both finished: reused, nothing trained or scored again
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    (run_dir / "round1" / "train" / "DONE").write_text("another weak network\n")
    compare(cfg)  # the weak network changed: scored again, the reference kept
    assert (ref / "model.pt").stat().st_mtime_ns == stamps[ref / "model.pt"]
    assert weak_file.stat().st_mtime_ns != stamps[weak_file]
    compare(cfg, iterations=3)  # a changed train setting: trained again from scratch
    assert read_json(ref / "metrics.json")["iterations"] == 3
    log = (ref / "log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in log[1:]] == ["1", "2", "3"]


def test_killed_reference_training_resumes_to_the_uninterrupted_weights(compared, tmp_path, monkeypatch):
    whole = compared[3]
    killed_dir, cfg = make_run(tmp_path)
    get, calls = GroundTruthDataset.get, []

    def dies_in_iteration_2(self, i, rng):  # batch 2: iteration 1 ends with last.pt, the 3rd sample is the kill
        calls.append(i)
        if len(calls) > 2:
            raise KeyboardInterrupt("killed")
        return get(self, i, rng)

    monkeypatch.setattr(GroundTruthDataset, "get", dies_in_iteration_2)
    with pytest.raises(KeyboardInterrupt):
        run_reference(cfg, WEAK_STAGES)
    ref = killed_dir / "full_reference"
    assert (ref / "last.pt").is_file() and not (ref / "DONE").exists() and not (ref / "model.pt").exists()
    monkeypatch.setattr(GroundTruthDataset, "get", get)
    run_reference(cfg, WEAK_STAGES)  # same hash: the folder is kept and training continues from last.pt
    assert (ref / "DONE").is_file()
    resumed = torch.load(ref / "model.pt", weights_only=True)
    assert resumed.keys() == whole.keys() and all(torch.equal(resumed[k], whole[k]) for k in whole)


def test_compare_with_a_foreground_network(tmp_path):
    cfg = make_config(tmp_path)
    cfg = dataclasses.replace(cfg, rounds=dataclasses.replace(cfg.rounds, foreground_network=True))
    run_dir, cfg = make_run(tmp_path, cfg)
    path = compare(cfg)
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


def test_compare_needs_a_finished_run(tmp_path):
    run_dir, cfg = make_run(tmp_path)
    (run_dir / "scores.json").unlink()
    with pytest.raises(RunError, match=r"scores.json: not found: run `coarse2fine run` first"):
        run_reference(cfg, WEAK_STAGES)
    with pytest.raises(RunError, match="run `coarse2fine run` first"):
        write_report(run_dir, tmp_path / "r", full_metrics=None)
    with pytest.raises(RunError, match=r"compare: no finished comparison .* run `coarse2fine compare` first"):
        compare_report(run_dir)
    other = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, name="other"))
    with pytest.raises(RunError, match=r"other/scores.json: not found"):
        run_reference(other, WEAK_STAGES)


def test_report_module_trains_nothing():
    tree = ast.parse(Path(pipeline.commands.report.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
        {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m.startswith(("torch", "stages", "pipeline.learn", "pipeline.models"))}


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
