"""VGG16-BN of DeeperCluster: Sobel front end, published sizes, conv taps, sobel2RGB, checkpoint loading."""
import copy

import pytest
import torch

from fdsl.errors import UserError
from fdsl.models.vgg import NUM_CONVS, conv_output_sides, create_vgg16, load_body, sobel2rgb

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread beats two contending ones

TINY = {"width": 1 / 16, "img_size": 32}


def test_sobel_front_end_is_fixed_and_published_sizes_hold():
    net = create_vgg16(sobel=True, **TINY)
    grey, sobel = net.sobel
    assert torch.all(grey.weight == 1 / 3) and not grey.weight.requires_grad
    assert sobel.weight[0, 0].tolist() == [[1, 0, -1], [2, 0, -2], [1, 0, -1]]
    assert sobel.weight[1, 0].tolist() == [[1, 2, 1], [0, 0, 0], [-1, -2, -1]]
    assert not any(p.requires_grad for p in net.sobel.parameters())
    assert net.body.features[0].in_channels == 2
    assert create_vgg16(sobel=False, **TINY).body.features[0].in_channels == 3
    # 224 crops reach the body at 226 px with or without Sobel; five pools give fc6's 7x7 input
    assert conv_output_sides(224) == [226, 226, 113, 113, 56, 56, 56, 28, 28, 28, 14, 14, 14, 7]
    with torch.device("meta"):  # shapes only: no 138M-parameter initialisation
        full = create_vgg16(sobel=True)
    assert full.body.classifier[0].in_features == 512 * 7 * 7 and full.num_features == 4096
    assert len(full.body.classifier) == 4  # pre-ReLU fc7 (relu=False)
    assert len(create_vgg16(relu=True, **TINY).body.classifier) == 5
    x = torch.randn(2, 3, 32, 32)
    net.eval()
    assert net(x).shape == (2, net.num_features)
    for k in range(1, NUM_CONVS + 1):
        tap = net.forward_conv(x, k)
        assert tap.shape[1:] == (net.conv_channels(k), net.conv_side(k), net.conv_side(k))
        assert tap.min() >= 0  # after the ReLU
    net.conv = 5
    assert net(x).shape == (2, net.conv_channels(5), 8, 8)
    with pytest.raises(UserError, match="--conv 14"):
        net.forward_conv(x, 14)


def test_sobel2rgb_matches_sobel_plus_conv1():
    torch.manual_seed(0)
    net = create_vgg16(sobel=True, **TINY).eval()
    folded = copy.deepcopy(net)
    sobel2rgb(folded)
    assert folded.sobel is None and folded.body.features[0].weight.shape[1:] == (3, 5, 5)
    x = torch.randn(2, 3, 32, 32)
    a, b = net.forward_conv(x, 1), folded.forward_conv(x, 1)
    assert a.shape == b.shape
    assert torch.allclose(a[..., 2:-2, 2:-2], b[..., 2:-2, 2:-2], atol=1e-5)
    assert torch.allclose(net(x), folded(x), atol=1e-4)


def _published_checkpoint(net, path, prefix="module.body."):
    sd = {prefix + k: v.clone() for k, v in net.body.state_dict().items()}
    sd["module.sobel.0.weight"] = torch.zeros(1, 3, 1, 1)
    sd["module.sobel.0.bias"] = torch.zeros(1)
    sd["module.pred_layer.weight"] = torch.zeros(4, net.num_features)
    sd["module.pred_layer.bias"] = torch.zeros(4)
    torch.save({"epoch": 3, "state_dict": sd}, path)


def test_loads_published_and_own_checkpoints(tmp_path):
    torch.manual_seed(1)
    src = create_vgg16(sobel=True, **TINY)
    for prefix in ("module.body.", "module.", "trunk.body."):
        path = tmp_path / f"ckpt{len(prefix)}.pth"
        if prefix == "module.":
            torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}}, path)
        else:
            _published_checkpoint(src, path, prefix)
        dst = create_vgg16(sobel=True, **TINY)
        load_body(dst, str(path), log=lambda m: None)
        for key, value in src.body.state_dict().items():
            assert torch.equal(dst.body.state_dict()[key], value), (prefix, key)


def test_checkpoint_errors_are_one_line(tmp_path):
    path = tmp_path / "sobel.pth"
    _published_checkpoint(create_vgg16(sobel=True, **TINY), path)
    with pytest.raises(UserError, match="trained with Sobel .* pass --sobel true"):
        load_body(create_vgg16(sobel=False, **TINY), str(path))
    with pytest.raises(UserError, match="does not exist"):
        load_body(create_vgg16(sobel=True, **TINY), str(tmp_path / "missing.pth"))
    with pytest.raises(UserError, match="is .* but the model has"):
        load_body(create_vgg16(sobel=True, width=1 / 8, img_size=32), str(path))


def test_any_timm_model_with_a_pooled_feature_is_a_trunk():
    from fdsl.models.trunk import create_trunk

    for sobel in (False, True):
        trunk = create_trunk("resnet18", sobel=sobel, img_size=32).eval()
        assert trunk(torch.randn(2, 3, 32, 32)).shape == (2, trunk.num_features)
    with pytest.raises(UserError, match="not vgg16 and not a timm model"):
        create_trunk("no_such_net")
