import copy

import pytest
import torch
from torch import nn

from napari_semietpicker.model.network import ModelConfig, build_model
from napari_semietpicker.model.views import FLIP_VIEWS, predict_views
from napari_semietpicker.training.augment import dropblock, dropblock_mask, random_flip_rot
from napari_semietpicker.training.semi import batchnorm_statistics_frozen, ema_update


def test_ema_moves_teacher_by_alpha():
    student = build_model(ModelConfig(n_classes=1, preset="tiny"))
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, alpha=0.1)
    for name, value in teacher.state_dict().items():
        if value.dtype.is_floating_point:
            expected = 0.9 * before[name] + 0.1 * student.state_dict()[name]
            torch.testing.assert_close(value, expected)
    weight = "head.weight"
    torch.testing.assert_close(teacher.state_dict()[weight] - before[weight],
                               torch.full_like(before[weight], 0.1))


def test_strong_views_leave_batchnorm_running_statistics_alone():
    model = build_model(ModelConfig(n_classes=1, preset="tiny")).train()
    norm = next(m for m in model.modules() if isinstance(m, nn.BatchNorm3d))
    noisy = 5.0 + 3.0 * torch.randn(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    before = norm.running_mean.clone(), norm.running_var.clone()
    with batchnorm_statistics_frozen(model):
        out = model(noisy)
    torch.testing.assert_close(norm.running_mean, before[0])
    torch.testing.assert_close(norm.running_var, before[1])
    # Batch statistics were still used (train mode), and the momentum is back afterwards.
    assert not torch.allclose(out, model.eval()(noisy))
    model.train()(noisy)
    assert norm.momentum == 0.1 and not torch.equal(norm.running_mean, before[0])


class _Equivariant(nn.Module):
    """A flip-equivariant 'network': stride-2 average pool and a sigmoid."""

    def forward(self, x):
        return torch.sigmoid(nn.functional.avg_pool3d(x, 2))


def test_flipped_views_are_undone_before_averaging():
    x = torch.randn(2, 1, 8, 10, 12)
    model = _Equivariant()
    plain = model(x)
    for dims in FLIP_VIEWS:
        torch.testing.assert_close(predict_views(model, x, (dims,)), plain)
    torch.testing.assert_close(predict_views(model, x), plain)


def test_flip_views_of_a_real_model_differ_from_plain():
    model = build_model(ModelConfig(n_classes=1, preset="tiny")).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(predict_views(model, x), model(x))


@pytest.mark.parametrize("rate", [0.05, 0.1, 0.3])
def test_dropblock_drops_about_the_set_fraction(rate):
    g = torch.Generator().manual_seed(0)
    mask = dropblock_mask((4, 1, 48, 48, 48), rate, g)
    assert abs(mask.float().mean().item() - rate) < 0.25 * rate


def test_dropblock_regions_are_small_and_geometry_unchanged():
    g = torch.Generator().manual_seed(1)
    image = torch.randn(1, 1, 40, 40, 40)
    mask = dropblock_mask(tuple(image.shape), 0.1, g)
    # Blocks grow from 3x3x3: a 7-voxel cube (a small particle) is almost never hidden whole.
    pooled = torch.nn.functional.avg_pool3d(mask.float(), 7, stride=1)
    assert pooled.max().item() < 1.0
    out = dropblock(image, 0.1, torch.Generator().manual_seed(1))
    assert out.shape == image.shape
    kept = ~dropblock_mask(tuple(image.shape), 0.1, torch.Generator().manual_seed(1))
    torch.testing.assert_close(out[kept], image[kept])
    assert (out != image).float().mean().item() == pytest.approx(0.1, abs=0.03)


def test_flip_rot_keeps_image_and_target_aligned():
    g = torch.Generator().manual_seed(3)
    image = torch.zeros(1, 1, 8, 8, 8)
    image[0, 0, 1, 2, 5] = image[0, 0, 1, 3, 5] = 1.0
    image[0, 0, 0, 2, 4] = image[0, 0, 0, 3, 4] = 1.0
    image[0, 0, 1, 2, 4] = image[0, 0, 0, 2, 5] = 1.0
    image[0, 0, 0, 3, 5] = image[0, 0, 1, 3, 4] = 1.0  # a 2x2x2 block = output voxel (0, 1, 2)
    target = torch.nn.functional.avg_pool3d(image, 2)
    for _ in range(8):
        img, tgt = random_flip_rot(image, target, g)
        torch.testing.assert_close(torch.nn.functional.avg_pool3d(img, 2), tgt)
