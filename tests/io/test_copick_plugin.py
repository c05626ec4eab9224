"""copick's own CLI lists ``semietpicker`` under training, inference and evaluation, found
through the entry points pyproject.toml declares, and runs them on a small copick project."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

copick = pytest.importorskip("copick")
click_testing = pytest.importorskip("click.testing")
tomllib = pytest.importorskip("tomllib")

from test_interop import VOXEL, project, volume  # noqa: E402, F401  (fixtures)

from napari_semietpicker.classes import ParticleClass, save_classes  # noqa: E402
from napari_semietpicker.io.copick_io import open_project, read_copick_picks  # noqa: E402

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
GROUPS = ("training", "inference", "evaluation")


@pytest.fixture
def copick_cli(tmp_path, monkeypatch):
    """copick's CLI as its ``main`` builds it, seeing our entry points as pyproject.toml
    declares them (a distribution's metadata on sys.path, as an install would leave it)."""
    entry_points = tomllib.loads(PYPROJECT.read_text())["project"]["entry-points"]
    dist = tmp_path / "site" / "semietpicker_under_test-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: semietpicker-under-test\n"
                                   "Version: 0\n")
    (dist / "entry_points.txt").write_text("".join(
        f"[copick.{group}.commands]\n"
        + "".join(f"{k} = {v}\n" for k, v in entry_points[f"copick.{group}.commands"].items())
        for group in GROUPS))
    monkeypatch.syspath_prepend(str(dist.parent))
    for name in [m for m in sys.modules if m.startswith("copick.cli")]:
        monkeypatch.delitem(sys.modules, name)  # copick assembles its CLI on import
    from copick.cli.cli import cli

    runner = click_testing.CliRunner()
    return lambda *args: runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_copick_cli_lists_and_runs_our_commands(copick_cli, project, tmp_path):  # noqa: F811
    for group in GROUPS:
        listing = copick_cli(group, "--help")
        assert listing.exit_code == 0 and "semietpicker" in listing.output, listing.output
    config, _ = project
    classes = tmp_path / "classes.json"
    save_classes([ParticleClass("ribosome", 150.0), ParticleClass("apo-ferritin", 60.0)], classes)
    source = ["-c", config, "--tomo-type", "wbp", "--voxel-spacing", VOXEL]
    model = tmp_path / "model"
    trained = copick_cli("training", "semietpicker", *source, "--runs", "TS_1", "--user",
                         "curation", "--session", "0", "--classes", classes, "--out", model,
                         "--preset", "tiny", "--crop", 32, "--steps", 2, "--cotrain-steps", 0)
    assert trained.exit_code == 0, trained.output
    assert (model / "model.safetensors").is_file()

    picked = copick_cli("inference", "semietpicker", *source, model, "--session", "1",
                        "--threshold", "0.05")
    assert picked.exit_code == 0, picked.output
    parts = sorted(p.stem for p in config.parent.glob("config.json.parts/*.csv"))
    assert parts == ["TS_1", "TS_2"]  # every run picked, written into the project
    read_copick_picks(open_project(config), user_id="semietpicker", session_id="1")

    # the reference picks scored against themselves: every figure is 1
    scored = copick_cli("evaluation", "semietpicker", "-c", config, "--pred-user", "curation",
                        "--truth-user", "curation", "--classes", classes, "--json")
    assert scored.exit_code == 0, scored.output
    figures = json.loads(scored.output[scored.output.index("{"):])
    assert figures["mean_f1"]["0.5"] == pytest.approx(1.0)
    assert figures["experiments"] == ["TS_1", "TS_2"]

    missing = copick_cli("evaluation", "semietpicker", "-c", config, "--pred-user", "nobody",
                         "--truth-user", "curation")
    assert missing.exit_code != 0 and "no picks of user 'nobody'" in missing.output
