"""The ``semietpicker`` command end to end, as a user runs it (tiny sizes, CPU)."""

import json

import pandas as pd
import pytest
import torch

from napari_semietpicker.cli import main
from napari_semietpicker.io.formats import read_picks
from napari_semietpicker.model.checkpoint import load_card
from napari_semietpicker.training.config import FINE_TUNE_LR, TrainConfig


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    assert main(["-q", "simulate", str(out), "--n", "3", "--shape", "64", "96", "96",
                 "--seed", "0", "--voxel-size", "13.5", "--density", "4"]) == 0
    return out


def test_simulate_writes_tomograms_and_picks(simulated):
    tomograms = sorted((simulated / "tomograms").glob("*.mrc"))
    assert [t.stem for t in tomograms] == ["sim_000", "sim_001", "sim_002"]
    picks = pd.read_csv(simulated / "picks.csv")
    assert set(picks["experiment"]) <= {"sim_000", "sim_001", "sim_002"}
    assert len(picks) > 0


def test_train_predict_evaluate_convert(simulated, tmp_path, capsys):
    tomograms = sorted(str(p) for p in (simulated / "tomograms").glob("*.mrc"))
    model = tmp_path / "model"
    code = main(["-q", "train", "--tomograms", tomograms[0], "--picks",
                 str(simulated / "picks.csv"), "--unlabeled", tomograms[1], "--out", str(model),
                 "--steps", "3", "--cotrain-steps", "2", "--preset", "tiny", "--crop", "64",
                 "--device", "cpu", "--pseudo-labels", "peaks"])
    assert code == 0
    card = load_card(model)
    assert card.voxel_size == 13.5 and card.history["steps_done"] == 5
    assert card.history["unlabelled"] == ["sim_001"]
    assert card.history["train_config"]["pseudo_labels"] == "peaks"
    assert set(card.history["pseudo_label_thresholds"]) == {c.name for c in card.classes}

    preds = tmp_path / "preds.csv"
    assert main(["-q", "predict", str(model), tomograms[2], "--out", str(preds),
                 "--threshold", "0.05", "--heatmaps", str(tmp_path / "hm")]) == 0
    table = read_picks(preds)
    assert set(table["experiment"]) <= {"sim_002"} and "score" in table
    assert len(list((tmp_path / "hm").glob("sim_002_*.mrc"))) == 6

    capsys.readouterr()
    assert main(["evaluate", str(preds), str(simulated / "picks.csv"), "--json",
                 "--runs", "sim_002"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["experiments"] == ["sim_002"]
    assert 0.0 <= result["czii_score"] <= 1.0
    assert {c["particle_type"] for c in result["classes"]} >= {"ribosome", "apo-ferritin"}

    assert main(["evaluate", str(preds), str(simulated / "picks.csv"), "--runs", "sim_002",
                 "--chance", str(simulated / "tomograms" / "*.mrc")]) == 0
    text = capsys.readouterr().out
    assert "random picks of the same counts (mean of 10 draws): CZII score" in text
    assert main(["evaluate", str(preds), str(simulated / "picks.csv"), "--runs", "sim_002",
                 "--chance", tomograms[0]]) == 2
    assert "--chance: no tomogram for reference run(s) sim_002" in capsys.readouterr().err

    star = tmp_path / "preds.star"
    assert main(["convert", str(preds), str(star), "--tomogram", tomograms[2],
                 "--format", "relion5"]) == 0
    back = read_picks(star, shape=(64, 96, 96), voxel_size=13.5)
    pd.testing.assert_frame_equal(back[["x", "y", "z"]], table[["x", "y", "z"]], atol=0.01)


def test_resume_after_stop(simulated, tmp_path):
    tomograms = sorted(str(p) for p in (simulated / "tomograms").glob("*.mrc"))
    args = ["-q", "train", "--tomograms", tomograms[0], "--picks", str(simulated / "picks.csv"),
            "--out", str(tmp_path / "m"), "--preset", "tiny", "--crop", "64",
            "--cotrain-steps", "0"]
    assert main([*args, "--steps", "2"]) == 0
    assert main([*args, "--steps", "4", "--resume"]) == 0
    assert load_card(tmp_path / "m").history["steps_done"] == 4


def test_bad_input_gives_one_clear_line(tmp_path, capsys):
    junk = tmp_path / "junk.mrc"
    junk.write_bytes(b"not an mrc file at all" * 10)
    code = main(["predict", str(tmp_path), str(junk), "--out", str(tmp_path / "p.csv")])
    assert code == 2
    err = capsys.readouterr().err
    assert "error" in err and "config.json" in err
    code = main(["evaluate", str(tmp_path / "missing.csv"), str(junk)])
    assert code == 2 and "missing.csv" in capsys.readouterr().err


def test_train_chooses_thresholds_and_predict_overrides_some(simulated, tmp_path, capsys):
    tomograms = sorted(str(p) for p in (simulated / "tomograms").glob("*.mrc"))
    args = ["-q", "train", "--tomograms", *tomograms[:2], "--picks",
            str(simulated / "picks.csv"), "--preset", "tiny", "--crop", "64", "--steps", "2",
            "--cotrain-steps", "0"]
    assert main([*args, "--out", str(tmp_path / "manual"), "--no-auto-thresholds"]) == 0
    assert load_card(tmp_path / "manual").thresholds == {}
    assert main([*args, "--out", str(tmp_path / "auto")]) == 0
    card = load_card(tmp_path / "auto")
    assert set(card.thresholds) == {c.name for c in card.classes}
    preds = tmp_path / "preds.csv"
    assert main(["-q", "predict", str(tmp_path / "auto"), tomograms[2], "--out", str(preds),
                 "--class-threshold", "ribosome=1.0"]) == 0
    table = read_picks(preds)
    assert "ribosome" not in set(table["particle_type"])  # no heatmap reaches 1.0 here
    low = min(card.thresholds.values())
    assert (table["score"] >= low).all()
    capsys.readouterr()
    assert main(["-q", "predict", str(tmp_path / "auto"), tomograms[2], "--out",
                 str(tmp_path / "x.csv"), "--class-threshold", "ribosom=0.5"]) == 2
    assert "the model has no class 'ribosom'" in capsys.readouterr().err


def test_match_tunes_thresholds_on_labelled_tomograms(simulated, tmp_path, capsys):
    tomograms = sorted(str(p) for p in (simulated / "tomograms").glob("*.mrc"))
    out = tmp_path / "tm.csv"
    assert main(["-q", "match", tomograms[2], "--out", str(out), "--rotations", "2",
                 "--labelled", *tomograms[:2], "--picks", str(simulated / "picks.csv")]) == 0
    text = capsys.readouterr().out
    assert "thresholds tuned on the labelled tomograms: apo-ferritin" in text
    table = read_picks(out)
    assert set(table["experiment"]) == {"sim_002"} and (table["score"] > 0).all()
    assert main(["-q", "match", tomograms[2], "--out", str(out), "--labelled", tomograms[0]]) == 2
    assert "go together" in capsys.readouterr().err

def test_train_crop_defaults_to_the_machines(simulated, tmp_path, monkeypatch):
    """Without ``--crop`` a CPU trains on crops of 64 (a GPU on TrainConfig's 96)."""
    from napari_semietpicker.training import config

    tomograms = sorted(str(p) for p in (simulated / "tomograms").glob("*.mrc"))
    assert main(["-q", "train", "--tomograms", tomograms[0], "--picks",
                 str(simulated / "picks.csv"), "--out", str(tmp_path / "m"), "--preset",
                 "tiny", "--steps", "1", "--device", "cpu", "--no-auto-thresholds"]) == 0
    assert load_card(tmp_path / "m").history["train_config"]["crop"] == config.CPU_CROP == 64
    monkeypatch.setattr(config, "resolve_device", lambda name: torch.device("cuda"))
    assert config.default_crop("auto") == TrainConfig.crop == 96


def test_train_steps_default_is_the_trainers(simulated, tmp_path, monkeypatch):
    """Without ``--steps`` the CLI trains ``TrainConfig.steps`` (one default, which its help
    states), as the Training dock starts from."""
    from napari_semietpicker.cli import build_parser

    steps_help = next(action.help for action in build_parser()._subparsers._group_actions[0]
                      .choices["train"]._actions if "--steps" in action.option_strings)
    assert f"default {TrainConfig.steps}:" in steps_help
    monkeypatch.setattr(TrainConfig, "steps", 2)
    tomograms = sorted(str(p) for p in (simulated / "tomograms").glob("*.mrc"))
    assert main(["-q", "train", "--tomograms", tomograms[0], "--picks",
                 str(simulated / "picks.csv"), "--out", str(tmp_path / "m"), "--preset",
                 "tiny", "--crop", "64", "--device", "cpu", "--no-auto-thresholds"]) == 0
    card = load_card(tmp_path / "m")
    assert card.history["train_config"]["steps"] == card.history["steps_done"] == 2


def test_train_average_last_reaches_the_trainer_and_must_be_a_share(simulated, tmp_path,
                                                                    capsys):
    tomograms = sorted(str(p) for p in (simulated / "tomograms").glob("*.mrc"))
    base = ["-q", "train", "--tomograms", tomograms[0], "--picks", str(simulated / "picks.csv"),
            "--preset", "tiny", "--crop", "64", "--steps", "1", "--no-auto-thresholds"]
    assert main([*base, "--out", str(tmp_path / "m"), "--average-last", "0.5"]) == 0
    assert load_card(tmp_path / "m").history["train_config"]["average_last"] == 0.5
    with pytest.raises(SystemExit) as exit_:
        main([*base, "--out", str(tmp_path / "n"), "--average-last", "1.5"])
    assert exit_.value.code == 2 and "must be in [0, 1], got 1.5" in capsys.readouterr().err


@pytest.fixture
def recorded_lams(monkeypatch) -> list[float]:
    """The background weight of every training step's loss, in order."""
    from napari_semietpicker.model.losses import reweighted_mse
    from napari_semietpicker.training import loop

    weights: list[float] = []

    def recording(pred, target, lam=4.0):
        weights.append(lam)
        return reweighted_mse(pred, target, lam)

    monkeypatch.setattr(loop, "reweighted_mse", recording)
    return weights


def test_train_lam_weights_the_loss_after_its_warmup_and_must_be_positive(
        simulated, tmp_path, capsys, recorded_lams):
    """The training loss weighs background by the paper's 4 for ``--lam-warmup`` steps,
    then by ``--lam``; by default a short run trains at 4 throughout (its warm-up is
    ``TrainConfig.lam_warmup`` steps)."""
    weights = recorded_lams
    tomograms = sorted(str(p) for p in (simulated / "tomograms").glob("*.mrc"))
    base = ["-q", "train", "--tomograms", tomograms[0], "--picks", str(simulated / "picks.csv"),
            "--preset", "tiny", "--crop", "64", "--steps", "3", "--no-auto-thresholds"]
    assert main([*base, "--out", str(tmp_path / "m"), "--lam", "16", "--lam-warmup", "1"]) == 0
    assert weights == [4.0, 16.0, 16.0]
    trained_with = load_card(tmp_path / "m").history["train_config"]
    assert (trained_with["lam"], trained_with["lam_warmup"]) == (16.0, 1)
    assert main([*base, "--out", str(tmp_path / "d")]) == 0
    assert weights[3:] == [4.0] * 3 and TrainConfig.lam_warmup > 3
    assert load_card(tmp_path / "d").history["train_config"]["lam"] == TrainConfig.lam
    for bad, says in (("--lam=0", "a finite number > 0"), ("--lam-warmup=-1", ">= 0")):
        with pytest.raises(SystemExit) as exit_:
            main([*base, "--out", str(tmp_path / "n"), bad])
        assert exit_.value.code == 2 and says in capsys.readouterr().err


def test_resume_keeps_the_models_own_loss_settings(simulated, tmp_path, recorded_lams):
    """``--resume`` continues the run it continues: settings left unset (lambda, the EMA
    rate) are the model's own, not the defaults; a setting given is taken."""
    weights = recorded_lams
    tomograms = sorted(str(p) for p in (simulated / "tomograms").glob("*.mrc"))
    base = ["-q", "train", "--tomograms", tomograms[0], "--picks", str(simulated / "picks.csv"),
            "--preset", "tiny", "--crop", "64", "--no-auto-thresholds", "--cotrain-steps", "0",
            "--out", str(tmp_path / "m")]
    assert main([*base, "--steps", "2", "--lam", "16", "--lam-warmup", "0",
                 "--ema-alpha", "0.05"]) == 0
    assert main([*base, "--steps", "4", "--resume"]) == 0
    assert weights == [16.0] * 4
    trained_with = load_card(tmp_path / "m").history["train_config"]
    assert (trained_with["lam"], trained_with["lam_warmup"], trained_with["ema_alpha"]) == \
        (16.0, 0, 0.05)
    assert main([*base, "--steps", "5", "--resume", "--lam", "8"]) == 0
    assert weights[4:] == [8.0]


def test_fine_tune_with_reviewed_picks_reads_negatives(simulated, tmp_path, monkeypatch):
    """``train --picks`` with a role column: rejected rows reach the sampler as negatives."""
    from napari_semietpicker import pipeline

    tomograms = sorted(str(p) for p in (simulated / "tomograms").glob("*.mrc"))
    base = ["-q", "train", "--tomograms", tomograms[0], "--preset", "tiny", "--crop", "64",
            "--cotrain-steps", "0", "--steps", "2"]
    assert main([*base, "--picks", str(simulated / "picks.csv"), "--out",
                 str(tmp_path / "m")]) == 0
    picks = read_picks(simulated / "picks.csv")
    picks = picks[picks["experiment"] == "sim_000"].reset_index(drop=True)
    picks["role"] = ["negative" if i < 3 else "positive" for i in range(len(picks))]
    reviewed = tmp_path / "reviewed.csv"
    picks.to_csv(reviewed, index=False)
    volumes = []
    real = pipeline.prepare_volume
    monkeypatch.setattr(pipeline, "prepare_volume",
                        lambda *a, **k: volumes.append(real(*a, **k)) or volumes[-1])
    assert main([*base, "--picks", str(reviewed), "--out", str(tmp_path / "tuned"),
                 "--init-from", str(tmp_path / "m")]) == 0
    assert len(volumes[0].negatives) == 3 and len(volumes[0].positions) == len(picks) - 3
    assert load_card(tmp_path / "tuned").history["fine_tuned_from"] == str(
        (tmp_path / "m").resolve())
    # a fine-tune's default learning rate is a tenth of training's
    assert load_card(tmp_path / "tuned").history["train_config"]["lr"] == FINE_TUNE_LR
    assert load_card(tmp_path / "m").history["train_config"]["lr"] == TrainConfig.lr
    # continued, the fine-tune keeps its own rate
    assert main([*base[:-1], "4", "--picks", str(reviewed), "--out", str(tmp_path / "tuned"),
                 "--resume"]) == 0
    card = load_card(tmp_path / "tuned")
    assert card.history["steps_done"] == 4 and card.history["train_config"]["lr"] == FINE_TUNE_LR
