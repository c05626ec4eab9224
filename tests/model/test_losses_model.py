import pytest
import torch

from napari_semietpicker.model.losses import reweighted_mse
from napari_semietpicker.model.network import ModelConfig, build_model, fold_batch_norms


def test_reweighted_mse_known_values():
    target = torch.tensor([1.0, 0.5, 0.0, 0.0]).reshape(1, 1, 1, 1, 4)
    perfect = reweighted_mse(target.clone(), target)
    assert perfect.item() == pytest.approx(0.0, abs=1e-9)
    zero = torch.zeros_like(target)
    # positive: (1*1 + 0.5*0.25) / 1.5 = 0.75; negative: 0.5*0.25 / 2.5 = 0.05; lam = 4
    assert reweighted_mse(zero, target, lam=4.0).item() == pytest.approx(0.75 + 4 * 0.05, rel=1e-5)
    # a false positive of 1 on background: negative term only, 2 / 2.5
    fp = torch.tensor([1.0, 0.5, 1.0, 0.0]).reshape(1, 1, 1, 1, 4)
    assert reweighted_mse(fp, target, lam=4.0).item() == pytest.approx(4 * 1 / 2.5, rel=1e-5)


def test_loss_is_averaged_per_class():
    target = torch.zeros(1, 2, 1, 1, 4)
    target[0, 0, 0, 0, 0] = 1.0  # class 1 has no particle in this crop
    pred = torch.zeros_like(target)
    # class 0: positive term 1, class 1: all zero -> mean 0.5
    assert reweighted_mse(pred, target).item() == pytest.approx(0.5, rel=1e-5)


@pytest.mark.parametrize("preset", ["tiny", "light", "medium"])
def test_model_output_shape_and_range(preset):
    model = build_model(ModelConfig(n_classes=3, preset=preset)).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 32, 64, 96))
    assert out.shape == (1, 3, 16, 32, 48)
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    # The head starts near the background level (1 %).
    assert float(out.mean()) < 0.05


def test_paper_preset_is_resnet34_deep():
    config = ModelConfig(n_classes=6, preset="paper")
    assert config.encoder_depths == (3, 4, 6, 3)
    model = build_model(config)
    assert len(model.stem) == 3  # three 3x3x3 convolutions instead of a 7x7x7
    assert [len(s) for s in model.stages] == [3, 4, 6, 3]


def test_model_config_validation():
    with pytest.raises(ValueError, match="unknown model preset"):
        ModelConfig(n_classes=2, preset="huge")
    with pytest.raises(ValueError, match="output stride 2"):
        ModelConfig(n_classes=2, output_stride=4)


def test_folded_batch_norms_compute_the_same_heatmaps_and_leave_the_model_alone():
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_classes=3, preset="light"))
    for module in model.modules():  # trained-looking statistics, not the identity
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batch_norms(model)
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in folded.modules())
    assert model.training and any(isinstance(m, torch.nn.BatchNorm3d) for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    x = torch.randn(1, 1, 32, 64, 64)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-5)


def test_unknown_target_voxels_count_in_neither_term():
    """NaN marks voxels a partial label says nothing about: the loss is that of the known
    voxels alone, whatever the prediction there."""
    target = torch.tensor([1.0, 0.5, 0.0, 0.0, float("nan"), float("nan")]).reshape(1, 1, 1, 1, 6)
    known = target[..., :4]
    for pred_unknown in (0.0, 1.0):
        pred = torch.tensor([0.0, 0.0, 1.0, 0.0, pred_unknown, pred_unknown]
                            ).reshape(1, 1, 1, 1, 6)
        expected = reweighted_mse(pred[..., :4], known, lam=4.0)
        assert reweighted_mse(pred, target, lam=4.0).item() == pytest.approx(expected.item())
    assert torch.isfinite(reweighted_mse(torch.zeros(1, 1, 2), torch.full((1, 1, 2), torch.nan)))
