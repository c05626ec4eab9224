"""Multi-process runs under torchrun with the gloo backend on the CPU (2 ranks)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from napari_semietpicker.cli import main
from napari_semietpicker.distributed import shard

SCRIPTS = Path(__file__).parent / "scripts"


def torchrun(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", *args]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_shard_splits_round_robin():
    assert shard(["a", "b", "c"]) == ["a", "b", "c"]  # one process: everything


def assert_ranks_hold_identical_weights(out: Path) -> None:
    for role in ("student", "teacher"):
        rank0 = load_file(str(out / f"{role}_rank0.safetensors"))
        rank1 = load_file(str(out / f"{role}_rank1.safetensors"))
        assert rank0.keys() == rank1.keys()
        for name in rank0:
            torch.testing.assert_close(rank0[name], rank1[name], rtol=0, atol=0)


def test_two_rank_training_keeps_ranks_identical(tmp_path):
    torchrun(str(SCRIPTS / "train_two_ranks.py"), str(tmp_path), cwd=tmp_path)
    assert_ranks_hold_identical_weights(tmp_path)
    model_files = sorted(p.name for p in (tmp_path / "model").iterdir())
    assert model_files == ["config.json", "model.safetensors", "trainer_state.pt"]
    saved = load_file(str(tmp_path / "model" / "model.safetensors"))
    teacher = load_file(str(tmp_path / "teacher_rank0.safetensors"))
    for name in saved:  # after co-training the saved model is the EMA teacher
        torch.testing.assert_close(saved[name], teacher[name], rtol=0, atol=0)


def test_out_of_memory_on_one_rank_shrinks_every_rank_together(tmp_path):
    done = torchrun(str(SCRIPTS / "train_two_ranks.py"), str(tmp_path), "oom", cwd=tmp_path)
    log = done.stdout + done.stderr
    # each rank logs both shrinks: its own out-of-memory error and the other rank's
    shrinks = [(1, "batch 2 of crops (64, 96, 96)", "batch 1 of crops (64, 96, 96)"),
               (3, "batch 1 of crops (64, 96, 96)", "batch 1 of crops (32, 64, 64)")]
    for step, before, after in shrinks:
        for rank in (0, 1):
            assert (f"[rank {rank}] WARNING: out of memory at step {step} with {before}; "
                    f"retrying with {after}") in log
    sizes = [json.loads((tmp_path / f"sizes_rank{r}.json").read_text()) for r in (0, 1)]
    assert sizes[0] == sizes[1] == {"batch_size": 1, "crop": [32, 64, 64]}
    assert_ranks_hold_identical_weights(tmp_path)


def test_out_of_memory_in_one_ranks_backward_ends_the_run_with_advice(tmp_path):
    done = torchrun(str(SCRIPTS / "train_two_ranks.py"), str(tmp_path), "oom-backward",
                    cwd=tmp_path, check=False)
    log = done.stdout + done.stderr
    assert done.returncode != 0
    assert ("RankOutOfMemoryError: rank 1 ran out of memory in the backward pass at step 1"
            in log)
    assert "--resume and a smaller --batch-size or --crop" in log
    assert "retrying" not in log  # no rank shrank alone


@pytest.fixture()
def four_tomograms_and_model(tmp_path):
    data = tmp_path / "sim"
    assert main(["-q", "simulate", str(data), "--n", "4", "--shape", "32", "64", "64",
                 "--density", "20"]) == 0
    tomograms = sorted((data / "tomograms").glob("*.mrc"))
    assert main(["-q", "train", "--tomograms", str(tomograms[0]), "--picks",
                 str(data / "picks.csv"), "--out", str(tmp_path / "model"), "--steps", "1",
                 "--cotrain-steps", "0", "--preset", "tiny", "--crop", "32"]) == 0
    return tomograms, tmp_path / "model"


def test_two_rank_batch_prediction_picks_each_once_and_resumes(four_tomograms_and_model,
                                                               tmp_path):
    tomograms, model = four_tomograms_and_model
    out = tmp_path / "preds.csv"
    args = ["-m", "napari_semietpicker.cli", "predict", str(model), *map(str, tomograms),
            "--out", str(out), "--threshold", "0.05", "--device", "cpu", "--window", "64"]
    first = torchrun(*args, cwd=tmp_path)
    log = first.stdout + first.stderr
    picked = re.findall(r"\[rank (\d)\] INFO: rank \d: picked (\S+)", log)
    assert sorted(name for _, name in picked) == [t.stem for t in tomograms]
    assert {rank for rank, _ in picked} == {"0", "1"}  # both ranks did work
    merged = pd.read_csv(out)
    parts = sorted((tmp_path / "preds.csv.parts").glob("*.csv"))
    assert [p.stem for p in parts] == [t.stem for t in tomograms]
    expected = pd.concat([pd.read_csv(p) for p in parts], ignore_index=True)
    assert len(merged) == len(expected)

    second = torchrun(*args, cwd=tmp_path)
    log = second.stdout + second.stderr
    assert "picked" not in log.replace("already picked", "")
    assert len(re.findall(r"already picked, skipping", log)) == 4
    pd.testing.assert_frame_equal(pd.read_csv(out), merged)
