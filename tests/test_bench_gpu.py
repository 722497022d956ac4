"""The GPU benchmark's CPU dry run: every section runs end to end at tiny sizes and reports sane numbers (the real
run needs a CUDA machine: ``python benchmarks/bench_gpu.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_gpu_dry_run(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks/bench_gpu.py"), "--dry-run", "--json", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["dry_run"] and r["mm_flop_per_s"] > 0
    assert [x["augment"] for x in r["s_fc"]] == [True, False] and all(x["step_s"] > 0 for x in r["s_fc"])
    assert sorted(r["others"]) == ["3-fc", "s-conv", "s-local"] and r["s_conv_channels_last"]["channels_last"]
    assert r["local_vs_conv"]["ratio"] > 0
    assert [p["k"] for p in r["packed"]] == [1, 2] and all(p["vmap"] for p in r["packed"])
    assert r["table2_projection"]["runs"] == 1035 and r["table2_projection"]["gpu_hours"] > 0
    assert "projected" in done.stdout
