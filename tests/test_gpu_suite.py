"""The one-shot GPU suite runs end to end (``--smoke``: CPU, tiny sizes) before device time
is spent on it: every row runs, or is skipped for a stated reason (no CUDA, no monai)."""

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def test_gpu_suite_smoke_runs_every_row(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu_suite

    gpu_suite.main(["--smoke", "--out", str(tmp_path), "--budget-s", "1000"])
    result = json.loads((tmp_path / "gpu-suite-smoke.json").read_text())
    rows = {row["name"]: row for row in result["rows"]}
    allowed_skips = ("skipped: CUDA graphs need a CUDA device", "skipped: No module named 'monai'")
    for name, row in rows.items():
        assert row["status"] == "ok" or row["status"].startswith(allowed_skips), (name, row)
    ran = [row for row in rows.values() if row["status"] == "ok"]
    assert any("compile" in name for name, row in rows.items() if row["status"] == "ok")
    assert any(name.startswith("co-train") and row["figures"]["teacher"]
               for name, row in rows.items())
    predicted = [row for row in ran if row["name"].startswith("predict")]
    assert len(predicted) >= 7 and all(row["figures"]["heatmaps s"] > 0 for row in predicted)
    assert "total" in capsys.readouterr().out
    assert (tmp_path / "gpu-suite-smoke.txt").read_text().startswith("gpu_suite --smoke")
    sys.modules.pop("gpu_suite", None)
