"""Faults that used to lose a user's file or model, or give a silently wrong result.

Each test makes the fault happen (a crash mid-save, a kill, a corrupted byte, a second
save, a folder of the user's) and checks that nothing is lost and the user is told.
"""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import napari_semietpicker
from napari_semietpicker.classes import ParticleClass, classes_for_names
from napari_semietpicker.cli import main
from napari_semietpicker.inference.predict import pick_tomogram
from napari_semietpicker.io.picks import picks_from_positions, write_picks_csv
from napari_semietpicker.io.tomogram import Tomogram, write_tomogram
from napari_semietpicker.model.checkpoint import ModelCard, load_card, load_model, save_model
from napari_semietpicker.model.network import ModelConfig, build_model
from napari_semietpicker.training.config import TrainConfig
from napari_semietpicker.training.data import prepare_volume
from napari_semietpicker.training.loop import Trainer

BLOB = [ParticleClass("blob", 60.0)]
TINY = ModelConfig(n_classes=1, preset="tiny")


def _tiny_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(TINY)


def _weights(model_dir: Path) -> dict:
    return load_file(str(model_dir / "model.safetensors"))


# -- 1. a model folder changes as one unit; never replaced without being asked ----------
def test_a_crash_while_writing_the_config_leaves_the_old_model_whole(tmp_path, monkeypatch):
    model_dir = tmp_path / "m"
    save_model(model_dir, _tiny_model(0), ModelCard(BLOB, 10.0, TINY))
    before = _weights(model_dir)
    real_write_text = Path.write_text

    def disk_full_on_config(self, *args, **kwargs):
        if "config.json" in self.name or "config.json" in str(self.parent.name):
            raise OSError(28, "No space left on device", str(self))
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", disk_full_on_config)
    with pytest.raises(OSError):
        save_model(model_dir, _tiny_model(1), ModelCard(BLOB, 12.0, TINY))
    monkeypatch.undo()
    model, card = load_model(model_dir)  # the old model, weights and config together
    assert card.voxel_size == 10.0
    for key, value in before.items():
        assert torch.equal(model.state_dict()[key].cpu(), value), key
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no half-written folder left


@pytest.fixture(scope="module")
def one_tomogram(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    assert main(["-q", "simulate", str(out), "--n", "1", "--shape", "64", "64", "64",
                 "--seed", "0", "--density", "4"]) == 0
    return out


def _train_args(sim: Path, out: Path, *extra: str) -> list[str]:
    return ["-q", "train", "--tomograms", str(sim / "tomograms" / "sim_000.mrc"),
            "--picks", str(sim / "picks.csv"), "--out", str(out), "--preset", "tiny",
            "--crop", "64", "--cotrain-steps", "0", "--device", "cpu", "--steps", "1", *extra]


def test_train_refuses_to_replace_a_model_without_overwrite(one_tomogram, tmp_path, capsys):
    model = tmp_path / "model"
    assert main(_train_args(one_tomogram, model)) == 0
    config = (model / "config.json").read_bytes()
    capsys.readouterr()
    assert main(_train_args(one_tomogram, model)) == 2
    assert "already holds a model" in capsys.readouterr().err
    assert (model / "config.json").read_bytes() == config
    assert main(_train_args(one_tomogram, model, "--overwrite")) == 0


def test_picks_of_unknown_runs_are_named_in_a_warning(one_tomogram, tmp_path, capsys):
    picks = pd.read_csv(one_tomogram / "picks.csv")
    stray = picks.head(3).assign(experiment="TS_typo")
    path = tmp_path / "picks.csv"
    pd.concat([picks, stray]).to_csv(path, index=False)
    args = _train_args(one_tomogram, tmp_path / "m")
    args[args.index("--picks") + 1] = str(path)
    assert main(args) == 0
    assert "3 pick(s) of run(s) TS_typo match no tomogram" in capsys.readouterr().err


def test_steps_zero_or_negative_are_refused_and_save_nothing(one_tomogram, tmp_path, capsys):
    for steps in ("0", "-1"):
        args = _train_args(one_tomogram, tmp_path / "m")
        args[args.index("--steps") + 1] = steps
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 2
        assert "--steps: must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_a_diverged_run_does_not_claim_a_model_was_saved(one_tomogram, tmp_path, capsys,
                                                         monkeypatch):
    def diverge(self, batch):
        raise FloatingPointError("loss is nan at step 0")

    monkeypatch.setattr(Trainer, "_train_step", diverge)
    assert main(_train_args(one_tomogram, tmp_path / "m")) == 1
    out = capsys.readouterr().out
    assert "model saved in" not in out and "no model was saved" in out


def _small_model_dir(tmp_path: Path) -> Path:
    model_dir = tmp_path / "model"
    save_model(model_dir, _tiny_model(0), ModelCard(BLOB, 10.0, TINY))
    return model_dir


def test_predict_never_deletes_a_parts_folder_it_did_not_make(tmp_path, capsys):
    model_dir = _small_model_dir(tmp_path)
    tomogram = tmp_path / "t.mrc"
    write_tomogram(tomogram, np.random.default_rng(0).normal(size=(32, 32, 32)), 10.0)
    users = tmp_path / "out.csv.parts"
    users.mkdir()
    (users / "thesis.txt").write_text("years of work")
    code = main(["-q", "predict", str(model_dir), str(tomogram), "--out",
                 str(tmp_path / "out.csv"), "--device", "cpu"])
    assert code == 2
    assert "was not made by semietpicker" in capsys.readouterr().err
    assert (users / "thesis.txt").read_text() == "years of work"


def test_predict_again_removes_only_its_own_parts(tmp_path):
    model_dir = _small_model_dir(tmp_path)
    tomogram = tmp_path / "t.mrc"
    write_tomogram(tomogram, np.random.default_rng(0).normal(size=(32, 32, 32)), 10.0)
    args = ["-q", "predict", str(model_dir), str(tomogram), "--out", str(tmp_path / "out.csv"),
            "--device", "cpu", "--threshold", "0.05"]
    assert main(args) == 0
    parts = tmp_path / "out.csv.parts"
    (parts / "mine.txt").write_text("kept")
    assert main([*args, "--overwrite"]) == 0
    assert (parts / "mine.txt").read_text() == "kept" and (parts / "t.csv").is_file()


# -- 3. backups keep the user's original; written files keep ordinary modes ----------------
def _table(n: int) -> pd.DataFrame:
    return picks_from_positions(np.full((n, 3), 50.0), "t", "blob")


def test_two_saves_keep_the_users_original_file(tmp_path):
    path = tmp_path / "picks.csv"
    path.write_text("experiment,particle_type,x,y,z\nmine,blob,1,2,3\n")
    original = path.read_text()
    write_picks_csv(_table(1), path, keep_previous=True)
    write_picks_csv(_table(2), path, keep_previous=True)
    backups = sorted(tmp_path.glob("picks.csv.bak*"))
    assert original in [b.read_text() for b in backups]
    assert len(pd.read_csv(path)) == 2


def test_written_files_honour_the_umask_and_keep_an_existing_mode(tmp_path):
    old = os.umask(0o022)
    try:
        new = tmp_path / "new.csv"
        write_picks_csv(_table(1), new)
        assert new.stat().st_mode & 0o777 == 0o644
        shared = tmp_path / "shared.csv"
        shared.write_text("x")
        shared.chmod(0o664)
        write_picks_csv(_table(1), shared)
        assert shared.stat().st_mode & 0o777 == 0o664
        model_dir = _small_model_dir(tmp_path)
        assert (model_dir / "model.safetensors").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


# -- 4. temporary files of a killed writer are cleaned up ------------------------------------
def test_temporary_files_of_a_killed_writer_are_swept_on_the_next_write(tmp_path):
    target = tmp_path / "picks.csv"
    script = (
        "import os, sys\n"
        "from napari_semietpicker.io.atomic import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'x' * 100000)\n"
        "    os._exit(9)  # killed mid-write: no clean-up runs\n"
    )
    src = str(Path(napari_semietpicker.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src}
    subprocess.run([sys.executable, "-c", script, str(target)], env=env, check=False)
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the orphan
    write_picks_csv(_table(1), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["picks.csv"]


# -- 5. corrupted or non-finite weights, non-finite heatmaps -------------------------------
def test_flipped_bytes_in_the_weights_are_refused_on_load(tmp_path):
    model_dir = _small_model_dir(tmp_path)
    weights = model_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-400:-200] = b"\xff" * 200  # inside the tensor data: NaN floats, a valid header
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="model.safetensors: truncated or corrupted weights"):
        load_model(model_dir)


def test_non_finite_weights_are_refused(tmp_path):
    model = _tiny_model(0)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    save_model(tmp_path / "m", model, ModelCard(BLOB, 10.0, TINY))
    with pytest.raises(ValueError, match="NaN or infinite"):
        load_model(tmp_path / "m")


def test_non_finite_heatmaps_are_an_error_not_zero_picks(tmp_path):
    model = _tiny_model(0).eval()
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    data = np.random.default_rng(0).normal(size=(32, 32, 32)).astype(np.float32)
    tomogram = Tomogram(data, 10.0, "t")
    with pytest.raises(ValueError, match="t: the model's heatmaps hold NaN"):
        pick_tomogram(model, ModelCard(BLOB, 10.0, TINY), tomogram)


# -- 6. resuming with other class names -----------------------------------------------------
def test_resume_with_other_class_names_is_refused(blob_set, tmp_path):
    tomogram = blob_set["tomograms"][0]
    classes = blob_set["classes"]
    config = TrainConfig(steps=1, preset="tiny", crop=64, device="cpu")
    volume = prepare_volume(tomogram, blob_set["picks"], classes)
    Trainer(config, classes, [volume], tmp_path / "m").run()
    renamed = [ParticleClass("other", c.radius_A) if i == 0 else c for i, c in enumerate(classes)]
    picks = blob_set["picks"].replace({"particle_type": {classes[0].name: "other"}})
    volume = prepare_volume(tomogram, picks, renamed)
    with pytest.raises(ValueError, match="cannot resume: it was trained for classes big, small"):
        Trainer(TrainConfig(steps=2, preset="tiny", crop=64, device="cpu"), renamed,
                [volume], tmp_path / "m", resume=True)


# -- 8. the model card is validated; resampling is bounded -----------------------------------
@pytest.mark.parametrize("edit, problem", [
    (lambda c: c.update(voxel_size=0), "voxel_size"),
    (lambda c: c.update(voxel_size=-10), "voxel_size"),
    (lambda c: c["model"].update(n_classes=2), "output channel"),
    (lambda c: c.update(classes=c["classes"] * 2, model={**c["model"], "n_classes": 2}),
     "duplicate class names"),
    (lambda c: c.update(thresholds={"blob": 1.5}), "thresholds"),
    (lambda c: c["classes"][0].update(radius_A=-3), "radius_A"),
])
def test_bad_values_in_a_model_config_are_refused(tmp_path, edit, problem):
    model_dir = _small_model_dir(tmp_path)
    config = json.loads((model_dir / "config.json").read_text())
    edit(config)
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"config.json: invalid model config.*{problem}"):
        load_card(model_dir)


def test_a_tiny_voxel_size_is_refused_not_resampled_to_nothing(tmp_path):
    data = np.random.default_rng(0).normal(size=(32, 32, 32)).astype(np.float32)
    tomogram = Tomogram(data, 1e-6, "t")
    with pytest.raises(ValueError, match="t: voxel size 1e-06 A is .*x the model's"):
        pick_tomogram(_tiny_model(0), ModelCard(BLOB, 10.0, TINY), tomogram)


def test_a_huge_voxel_size_is_refused_before_any_allocation(tmp_path):
    data = np.random.default_rng(0).normal(size=(32, 32, 32)).astype(np.float32)
    tomogram = Tomogram(data, 1e6, "t")
    with pytest.raises(ValueError, match="at most 16x is resampled"):
        pick_tomogram(_tiny_model(0), ModelCard(BLOB, 10.0, TINY), tomogram)


# -- 9. classes without a radius ------------------------------------------------------------
def test_classes_without_a_known_radius_are_named_in_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        classes = classes_for_names(["ribosome", "mystery"])
    assert [c.radius_A for c in classes] == [150.0, 100.0]
    assert "mystery have no known radius: using 100 A" in caplog.text


def test_a_crash_between_the_two_renames_of_a_swap_loses_no_model(tmp_path, monkeypatch):
    from napari_semietpicker.model import checkpoint

    model_dir = tmp_path / "m"
    save_model(model_dir, _tiny_model(0), ModelCard(BLOB, 10.0, TINY))
    before = _weights(model_dir)
    real_replace, calls = os.replace, []

    def crash_on_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the old folder is set aside, the new one not yet in place
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        save_model(model_dir, _tiny_model(1), ModelCard(BLOB, 12.0, TINY))
    monkeypatch.undo()
    assert not model_dir.exists()  # the moment of the crash: only the set-aside copy
    model, card = load_model(model_dir)  # finishes the swap the crash interrupted
    assert card.voxel_size == 10.0
    assert all(torch.equal(model.state_dict()[k].cpu(), v) for k, v in before.items())
    save_model(model_dir, _tiny_model(1), ModelCard(BLOB, 12.0, TINY))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_a_trainer_with_nothing_to_train_saves_nothing(blob_set, tmp_path):
    volume = prepare_volume(blob_set["tomograms"][0], blob_set["picks"], blob_set["classes"])
    config = TrainConfig(steps=0, cotrain_steps=5, preset="tiny", crop=64, device="cpu")
    with pytest.raises(ValueError, match=r"nothing to train: 0 burn-in .*no unlabelled"):
        Trainer(config, blob_set["classes"], [volume], tmp_path / "m")
    assert not (tmp_path / "m").exists()
