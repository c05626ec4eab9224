"""The roofline benchmark runs end to end on a tiny tomogram: FLOPs are counted, every stage
of a pick is timed, and a training step is measured (it once broke silently when the
resampling API changed)."""

import re
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def test_roofline_prints_stages_and_rates(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import roofline

    roofline.main(["--presets", "light", "--count-presets", "light", "--levels", "0", "1",
                   "--shape", "32", "64", "64", "--window", "64", "--precisions", "fp32",
                   "--train-steps", "1", "--crop", "32", "--batch-size", "2"])
    out = capsys.readouterr().out
    sys.modules.pop("roofline", None)
    tables = re.findall(r"pick, light at (\d+) A, fp32: ([\d.]+) s end to end", out)
    assert [t[0] for t in tables] == ["10", "20"]
    for stage in ("network", "peaks", "reading", "normalising", "window copies"):
        assert re.search(rf"^  {stage}\s+[\d.]+\s+[\d.]+%", out, re.M), stage
    assert re.search(r"^  resampling \(binning\)", out, re.M)  # the 20 A pick bins
    assert re.search(r"training step, light, fp32: [\d.]+ s, \d+ GFLOP/s", out)
