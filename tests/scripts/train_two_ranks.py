"""Run under torchrun: train a tiny model on every rank, then dump each rank's weights.

Usage: torchrun --nproc-per-node 2 train_two_ranks.py OUT_DIR [oom | oom-backward]

With ``oom`` each rank runs out of memory once, alone: rank 1 in the labelled forward pass
of step 1, rank 0 in the strong-view forward pass of step 3 (co-training). Each rank writes
the batch size and crop it ended with to ``OUT_DIR/sizes_rank<r>.json``. With
``oom-backward`` rank 1 runs out of memory in the backward pass of step 1.
"""

import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from napari_semietpicker import distributed
from napari_semietpicker.classes import ParticleClass
from napari_semietpicker.io.picks import picks_from_positions
from napari_semietpicker.io.tomogram import Tomogram
from napari_semietpicker.training.config import TrainConfig
from napari_semietpicker.training.data import prepare_volume
from napari_semietpicker.training.loop import Trainer

torch.set_num_threads(1)
logging.basicConfig(format=f"[rank {os.environ['RANK']}] %(levelname)s: %(message)s")
out = Path(sys.argv[1])
rng = np.random.default_rng(0)  # the same data on both ranks
volume = rng.normal(size=(64, 96, 96)).astype(np.float32)
centers = rng.uniform(8, 56, size=(6, 3))
picks = picks_from_positions(centers * 10.0, "t", "blob")
classes = [ParticleClass("blob", 50.0)]
labelled = [prepare_volume(Tomogram(volume, 10.0, "t"), picks, classes)]
unlabelled = [prepare_volume(Tomogram(volume[::-1].copy(), 10.0, "u"))]
mode = sys.argv[2] if len(sys.argv) > 2 else ""
simulate_oom = mode == "oom"
config = TrainConfig(steps=3, cotrain_steps=2, preset="tiny", crop=96 if simulate_oom else 64,
                     batch_size=2 if simulate_oom else 1, device="cpu", ema_alpha=0.3,
                     checkpoint_every=1000)
trainer = Trainer(config, classes, labelled, out / "model", unlabelled)
rank = distributed.rank()
failures = {(1, 0) if rank == 1 else (3, 1)} if simulate_oom else set()
calls = {}


def out_of_memory_once(module, args):
    """A forward pre-hook on the student (after DDP's buffer broadcast): fail once, here."""
    if module is not trainer.student:  # the EMA teacher is a deep copy with the same hooks
        return
    call = (trainer.step, calls.setdefault(trainer.step, 0))
    calls[trainer.step] += 1
    if call in failures:
        failures.remove(call)
        raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (simulated on rank {rank})")


def out_of_memory_in_backward(grad):
    if rank == 1 and trainer.step == 1:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated in backward)")
    return grad


trainer.student.register_forward_pre_hook(out_of_memory_once)
if mode == "oom-backward":
    next(trainer.student.parameters()).register_hook(out_of_memory_in_backward)
result = trainer.run()
assert distributed.world_size() == 2 and result.steps_done == 5 and not failures
sizes = {"batch_size": trainer.config.batch_size,
         "crop": [int(s) for s in trainer.labelled.crop_shape]}
(out / f"sizes_rank{rank}.json").write_text(json.dumps(sizes))
for role, module in (("student", trainer.student), ("teacher", trainer.teacher)):
    state = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(out / f"{role}_rank{rank}.safetensors"))
