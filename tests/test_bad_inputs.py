"""The bad-input suite: what a hostile or unlucky user feeds the CLI and the napari reader.

Every case must end in one clear line naming the file (or argument) and the problem,
with exit code 2 (130 for Ctrl-C), no traceback, and nothing of the user's lost.
docs/failure-modes.md quotes the count of these cases.
"""

import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_semietpicker import cli
from napari_semietpicker._reader import napari_get_reader
from napari_semietpicker.classes import ParticleClass
from napari_semietpicker.io import atomic
from napari_semietpicker.io.picks import picks_from_positions, write_picks_csv
from napari_semietpicker.io.tomogram import write_tomogram
from napari_semietpicker.model.checkpoint import ModelCard, save_model
from napari_semietpicker.model.network import ModelConfig, build_model

BLOB = [ParticleClass("blob", 60.0)]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    torch.manual_seed(0)
    config = ModelConfig(n_classes=1, preset="tiny")
    save_model(root / "model", build_model(config), ModelCard(BLOB, 10.0, config))
    rng = np.random.default_rng(0)
    write_tomogram(root / "t.mrc", rng.normal(size=(32, 32, 32)), 10.0)
    nan = rng.normal(size=(32, 32, 32)).astype(np.float32)
    nan[1, 2, 3] = np.nan
    write_tomogram(root / "nan.mrc", nan, 10.0)
    write_picks_csv(picks_from_positions(np.full((1, 3), 160.0), "t", "blob"), root / "p.csv")
    (root / "blob.json").write_text(json.dumps({"classes": [{"name": "blob", "radius_A": 60}]}))
    (root / "afile.txt").write_text("a file, not a folder")
    return root


def _model_with(files: Path, name: str, edit) -> str:
    """A copy of the good model whose config.json went through ``edit``."""
    target = files / name
    if not target.exists():
        target.mkdir()
        for f in (files / "model").iterdir():
            (target / f.name).write_bytes(f.read_bytes())
        config = json.loads((target / "config.json").read_text())
        text = edit(config)
        (target / "config.json").write_text(text if isinstance(text, str) else json.dumps(config))
    return str(target)


def _flipped_weights(files: Path) -> str:
    target = _model_with(files, "flipped", lambda c: None)
    weights = Path(target) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-300:-100] = b"\xff" * 200
    weights.write_bytes(bytes(data))
    return target


def _ome_zarr(files: Path, name: str, multiscales) -> str:
    zarr = pytest.importorskip("zarr")
    path = files / name
    if not path.exists():
        group = zarr.open_group(str(path), mode="w")
        group.create_dataset("0", data=np.zeros((16, 16, 16), dtype=np.float32))
        group.attrs["multiscales"] = multiscales
    return str(path)


def _text_file(files: Path, name: str, text: str) -> str:
    (files / name).write_text(text)
    return str(files / name)


def _predict(files: Path, *extra: str, model: str | None = None,
             tomogram: str | None = None, out: str = "out.csv") -> list[str]:
    return ["-q", "predict", model or str(files / "model"), tomogram or str(files / "t.mrc"),
            "--out", str(files / out) if not os.path.isabs(out) else out, "--device", "cpu",
            *extra]


def _train(files: Path, *extra: str, out: str = "trained") -> list[str]:
    return ["-q", "train", "--tomograms", str(files / "t.mrc"), "--picks", str(files / "p.csv"),
            "--classes", str(files / "blob.json"), "--out", str(files / out), "--preset", "tiny",
            "--crop", "32", "--cotrain-steps", "0", "--steps", "1", "--device", "cpu", *extra]


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def _disk_full(src, dst):
    raise OSError(28, "No space left on device", str(dst))


def _no_permission(*args, dir=None, **kwargs):
    raise PermissionError(13, "Permission denied", str(dir))


# Each case: id, argv (from the fixture folder), text the last line must hold,
# the exit code, and an optional monkeypatch (object, attribute, replacement).
CASES = [
    ("checkpoint-every 0", lambda f: _train(f, "--checkpoint-every", "0"),
     "--checkpoint-every: must be >= 1", 2, None),
    ("overlap 1", lambda f: _predict(f, "--overlap", "1"), "--overlap: must be in [0, 1)", 2, None),
    ("train batch-size 0", lambda f: _train(f, "--batch-size", "0"),
     "--batch-size: must be >= 1", 2, None),
    ("predict batch-size 0", lambda f: _predict(f, "--batch-size", "0"),
     "--batch-size: must be >= 1", 2, None),
    ("crop 0", lambda f: _train(f, "--crop", "0"), "--crop: must be >= 32", 2, None),
    ("steps 0", lambda f: _train(f, "--steps", "0"), "--steps: must be >= 1", 2, None),
    ("steps -1", lambda f: _train(f, "--steps", "-1"), "--steps: must be >= 1", 2, None),
    ("voxel-size 0", lambda f: _predict(f, "--voxel-size", "0"),
     "--voxel-size: must be a finite number > 0", 2, None),
    ("window 0", lambda f: _predict(f, "--window", "0"), "--window: must be >= 32", 2, None),
    ("out suffix .txt", lambda f: _predict(f, out="preds.txt"),
     "preds.txt: unknown picks file type", 2, None),
    ("config voxel size 0", lambda f: _predict(
        f, model=_model_with(f, "vs0", lambda c: c.update(voxel_size=0))),
     "config.json: invalid model config (voxel_size", 2, None),
    ("config duplicate classes", lambda f: _predict(f, model=_model_with(
        f, "dup", lambda c: c.update(classes=c["classes"] * 2,
                                     model={**c["model"], "n_classes": 2}))),
     "duplicate class names blob", 2, None),
    ("config threshold 1.5", lambda f: _predict(
        f, model=_model_with(f, "thr", lambda c: c.update(thresholds={"blob": 1.5}))),
     "thresholds.blob", 2, None),
    ("config fewer classes than heads", lambda f: _predict(
        f, model=_model_with(f, "heads", lambda c: c["model"].update(n_classes=3))),
     "3 output channel(s) but 1 class(es)", 2, None),
    ("config a JSON list", lambda f: _predict(f, model=_model_with(f, "list", lambda c: "[1]")),
     "invalid model config (expected a JSON object)", 2, None),
    ("config not JSON", lambda f: _predict(f, model=_model_with(f, "nojson", lambda c: "{x")),
     "corrupted model config", 2, None),
    ("config wrong types", lambda f: _predict(
        f, model=_model_with(f, "types", lambda c: c.update(classes="blob"))),
     "invalid model config (classes", 2, None),
    ("flipped bytes in weights", lambda f: _predict(f, model=_flipped_weights(f)),
     "model.safetensors: truncated or corrupted weights", 2, None),
    ("not a model folder", lambda f: _predict(f, model=str(f)), "not a model directory", 2, None),
    ("NaN voxels named by path", lambda f: _predict(f, tomogram=str(f / "nan.mrc")),
     "/nan.mrc: contains NaN", 2, None),
    ("voxel size 1e-6 A", lambda f: _predict(f, "--voxel-size", "1e-6"),
     "at most 16x is resampled", 2, None),
    ("voxel size 1e6 A", lambda f: _predict(f, "--voxel-size", "1e6"),
     "at most 16x is resampled", 2, None),
    ("a file where a folder is expected", lambda f: _predict(f, out="afile.txt/p.csv"),
     "afile.txt", 2, None),
    ("parts folder not ours", lambda f: (Path(f / "theirs.csv.parts").mkdir(exist_ok=True),
                                         _predict(f, out="theirs.csv"))[1],
     "was not made by semietpicker", 2, None),
    ("OME-Zarr dataset without path", lambda f: _predict(f, tomogram=_ome_zarr(
        f, "nopath.zarr", [{"datasets": [{"coordinateTransformations": []}]}])),
     "nopath.zarr: malformed OME-Zarr multiscales metadata", 2, None),
    ("OME-Zarr multiscales of numbers", lambda f: _predict(
        f, tomogram=_ome_zarr(f, "numbers.zarr", [5])),
     "numbers.zarr: malformed OME-Zarr", 2, None),
    ("OME-Zarr dataset pointing nowhere", lambda f: _predict(f, tomogram=_ome_zarr(
        f, "nowhere.zarr", [{"datasets": [{"path": "9"}]}])), "nowhere.zarr: malformed", 2, None),
    ("copick JSON bad location", lambda f: ["evaluate", _text_file(
        f, "bad_copick.json", json.dumps({"pickable_object_name": "blob", "run_name": "t",
                                           "points": [{"location": 5}]})), str(f / "p.csv")],
     "bad_copick.json: malformed copick point", 2, None),
    ("copick JSON points not a list", lambda f: ["evaluate", _text_file(
        f, "bad_points.json", json.dumps({"pickable_object_name": "blob", "run_name": "t",
                                           "points": {"a": 1}})), str(f / "p.csv")],
     "bad_points.json: copick 'points' must be a list", 2, None),
    ("STAR without coordinates", lambda f: ["evaluate", _text_file(
        f, "nocoords.star", "data_particles\n\nloop_\n_rlnTomoName #1\nTS_1\n"),
        str(f / "p.csv")], "nocoords.star", 2, None),
    ("STAR junk", lambda f: ["evaluate", _text_file(f, "junk.star", "data_\nloop_\n_rln\x01"),
                             str(f / "p.csv")], "junk.star", 2, None),
    ("missing picks file", lambda f: ["evaluate", str(f / "missing.csv"), str(f / "p.csv")],
     "missing.csv", 2, None),
    ("existing model without --overwrite", lambda f: _train(f, out="model"),
     "already holds a model; pass --resume", 2, None),
    ("Ctrl-C during a command", lambda f: _predict(f), "interrupted", 130,
     (cli.predict, "cmd_predict", _interrupt)),
    ("Ctrl-C during start-up", lambda f: _predict(f), "interrupted", 130,
     (cli, "build_parser", _interrupt)),
    ("disk full while writing", lambda f: _predict(f, out="full.csv"),
     "No space left on device", 2, (atomic.os, "replace", _disk_full)),
    ("permission denied", lambda f: _predict(f, out="denied.csv"), "Permission denied", 2,
     (tempfile, "mkstemp", _no_permission)),
]


@pytest.mark.parametrize("argv, expected, code, patch", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_ends_in_one_clear_line(files, capsys, monkeypatch, argv, expected, code,
                                          patch):
    args = argv(files)  # build the inputs before any patch
    if patch is not None:
        monkeypatch.setattr(*patch)
    try:
        result = cli.main(args)
    except SystemExit as exit_:  # argparse rejects arguments this way
        result = exit_.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert result == code, err
    assert "Traceback" not in err
    assert lines and lines[-1].startswith("semietpicker"), err
    assert expected in lines[-1], lines[-1]
    if "--out" in args:  # nothing was picked (no parts written) for an input refused
        assert not list(Path(files).glob("*.parts/*.csv")), err


def test_the_out_suffix_is_checked_before_the_model_is_even_loaded(files, capsys, monkeypatch):
    from napari_semietpicker import pipeline

    loaded = []
    monkeypatch.setattr(pipeline, "load_model", lambda *a, **k: loaded.append(1))
    assert cli.main(_predict(files, out="preds.txt")) == 2
    assert not loaded and not (files / "preds.txt.parts").exists()


# -- the napari reader: a notification-worthy ValueError or None, never a raw KeyError ------
READER_CASES = [
    ("OME-Zarr dataset without path",
     lambda f: _ome_zarr(f, "nopath.zarr", [{"datasets": [{"coordinateTransformations": []}]}]),
     "malformed OME-Zarr"),
    ("OME-Zarr multiscales of numbers", lambda f: _ome_zarr(f, "numbers.zarr", [5]),
     "malformed OME-Zarr"),
    ("copick JSON bad location", lambda f: _text_file(
        f, "bad_copick.json", json.dumps({"pickable_object_name": "blob", "run_name": "t",
                                           "points": [{"location": 5}]})),
     "malformed copick point"),
    ("MRC with an absurd header", lambda f: str(_absurd_mrc(f)), "not a readable MRC file"),
]


def _absurd_mrc(files: Path) -> Path:
    data = bytearray((files / "t.mrc").read_bytes())
    data[0:4] = struct.pack("<i", -5)
    (files / "absurd.mrc").write_bytes(bytes(data))
    return files / "absurd.mrc"


@pytest.mark.parametrize("make, expected", [c[1:] for c in READER_CASES],
                         ids=[c[0] for c in READER_CASES])
def test_the_napari_reader_refuses_clearly(files, make, expected):
    path = make(files)
    reader = napari_get_reader(path)
    if expected is None:
        assert reader is None
        return
    if reader is None:
        return  # not offered: napari tries other readers, nothing raised
    with pytest.raises(ValueError, match=expected) as info:
        reader(path)
    assert Path(path).name in str(info.value)


def test_a_utf8_bom_csv_opens_in_napari(files):
    path = files / "bom.csv"
    path.write_bytes("\ufeffexperiment,particle_type,x,y,z\nt,ribosome,10,20,30\n"
                     .encode("utf-8"))
    reader = napari_get_reader(str(path))
    assert reader is not None
    layers = reader(str(path))
    (data, attrs, _), = layers  # Points data in voxels of the layer's scale (Angstrom/voxel)
    assert np.allclose(data * np.asarray(attrs.get("scale", 1.0)), [[30.0, 20.0, 10.0]])
