"""Run under torchrun: train a tiny model on every rank, then dump each rank's weights.

Usage: torchrun --nproc-per-node 2 train_two_ranks.py OUT_DIR
"""

import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from napari_semietpicker import distributed
from napari_semietpicker.classes import ParticleClass
from napari_semietpicker.data import prepare_volume
from napari_semietpicker.io.picks import picks_from_positions
from napari_semietpicker.io.tomogram import Tomogram
from napari_semietpicker.train import TrainConfig, Trainer

torch.set_num_threads(1)
out = Path(sys.argv[1])
rng = np.random.default_rng(0)  # the same data on both ranks
volume = rng.normal(size=(64, 64, 64)).astype(np.float32)
centers = rng.uniform(8, 56, size=(6, 3))
picks = picks_from_positions(centers * 10.0, "t", "blob")
classes = [ParticleClass("blob", 50.0)]
labelled = [prepare_volume(Tomogram(volume, 10.0, "t"), picks, classes)]
unlabelled = [prepare_volume(Tomogram(volume[::-1].copy(), 10.0, "u"))]
config = TrainConfig(steps=3, cotrain_steps=2, preset="tiny", crop=64, batch_size=1,
                     device="cpu", ema_alpha=0.3, checkpoint_every=1000)
trainer = Trainer(config, classes, labelled, out / "model", unlabelled)
result = trainer.run()
assert distributed.world_size() == 2 and result.steps_done == 5
rank = distributed.rank()
for role, module in (("student", trainer.student), ("teacher", trainer.teacher)):
    state = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(out / f"{role}_rank{rank}.safetensors"))
