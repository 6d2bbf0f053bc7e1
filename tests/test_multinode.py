"""The crf stage on a real two-node Ray cluster (head + one joined node, 1 CPU each, on this machine).

The pytest process already owns a Ray session (conftest's `ray_cluster`), so the cluster is built in a subprocess by
`benchmarks/crf_scaling.py multinode`, which runs the stage through `pipeline.orchestration.parallel.map_tasks` and prints the
node ids its tasks ran on.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_crf_tasks_land_on_both_nodes(tmp_path):
    env = dict(os.environ, RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "crf_scaling.py"), "multinode", "--images", "16",
         "--workdir", str(tmp_path / "data"), "--ray-temp", f"/tmp/c2f-mn-{os.getpid()}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    nodes = re.search(r"nodes \[(.*?)\]", proc.stdout).group(1).replace("'", "").split(", ")
    assert len(nodes) == 2 and nodes[0] != nodes[1]
    per_node = dict(re.findall(r"'(\w+)': (\d+)", proc.stdout.split("tasks per node:")[1]))
    assert set(per_node) == set(nodes), proc.stdout  # both nodes ran tasks
    assert sum(int(v) for v in per_node.values()) == 16
    assert len(list((tmp_path / "data" / "ray").glob("*.png"))) == 16  # every image finished
