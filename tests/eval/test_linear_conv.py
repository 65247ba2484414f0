"""Evaluation protocols of DeeperCluster: VOC07 reader/loss/mAP, conv-probe pooling, Bottou decay, k-fold
split, and the eval-linear / eval-voc / eval-pretrain commands on tiny fixtures."""
import csv
import os

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from fdsl.errors import UserError
from fdsl.eval.linear_conv import BottouSchedule, ConvProbe, StepDecay, kfold_split, pool_size
from fdsl.eval.voc import DIFFICULT, VOC2007, masked_bce, read_split, voc_map
from fdsl.models.vgg import create_vgg16
from tests.helpers.cluster_images import make_oriented, make_voc

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread beats two contending ones

TINY = ["--width", "0.0625", "--img_size", "32", "--workers", "0", "--log_interval", "100", "--save_every", "0"]


def test_voc_map_excludes_difficult_and_matches_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (40, 3)).astype(np.int64)
    labels[::5, 1] = DIFFICULT
    scores = rng.normal(size=(40, 3)) + labels * 0.5
    value, aps = voc_map(scores, labels)
    keep = labels[:, 1] != DIFFICULT
    assert aps[1] == pytest.approx(100 * average_precision_score(labels[keep, 1], scores[keep, 1]))
    assert value == pytest.approx(np.mean(aps))
    perfect, _ = voc_map(np.where(labels == 1, 1.0, 0.0), labels)
    assert perfect == pytest.approx(100.0)
    tied, _ = voc_map(np.zeros((4, 1)), np.array([[1], [0], [1], [0]]))  # ties count against the positives
    assert tied == pytest.approx(50.0)


def test_masked_bce_ignores_difficult_labels():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    full = masked_bce(logits, torch.tensor([[1, 0, 1]]))
    masked = masked_bce(logits, torch.tensor([[1, 0, DIFFICULT]]))
    expected = -(torch.log(torch.sigmoid(torch.tensor(2.0))) + torch.log(1 - torch.sigmoid(torch.tensor(-1.0))))
    assert masked.item() == pytest.approx(expected.item(), rel=1e-5) and full > masked


def test_voc_reader_maps_labels_and_refuses_a_folder_without_imagesets(tmp_path):
    root = make_voc(tmp_path / "VOC2007", per_split=8)
    ids, labels = read_split(root, "train")
    assert ids[:2] == ["train0000", "train0001"] and labels.shape == (8, 20)
    assert labels[0, 0] == 1 and labels[0, 3] == DIFFICULT and labels[1, 0] == 0 and labels[1, 1] == 1
    ds = VOC2007(str(tmp_path), "trainval")  # also found as <path>/VOC2007
    img, target = ds[9]
    assert len(ds) == 16 and img.size == (32, 32) and target.dtype == torch.int64
    with pytest.raises(UserError, match="has no ImageSets/Main"):
        VOC2007(str(tmp_path / "VOC2007" / "JPEGImages"), "train")


def test_pool_sizes_keep_probes_under_10k_dims():
    assert [pool_size(k, c, s) for k, c, s in [(1, 64, 226), (3, 128, 113), (5, 256, 56), (8, 512, 28),
                                               (11, 512, 14)]] == [18, 14, 9, 6, 3]  # the published table
    for conv in range(1, 14):
        net = create_vgg16(img_size=64, width=0.25)
        probe = ConvProbe(net, 10, conv)
        assert probe.dim < 10_000
        assert probe(torch.randn(1, 3, 64, 64)).shape == (1, 10)
        assert not any(p.requires_grad for p in net.parameters())


def test_bottou_decay_and_step_decay():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = BottouSchedule(opt, 0.05, 1e-5)
    sched.after_update(1_000_000)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05 / np.sqrt(1 + 0.05 * 1e-5 * 1e6))
    sched.fast_forward(3, 0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    step = StepDecay(opt, 0.003, 10)
    step.after_update(25)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.003 / 4)


def test_kfold_split_is_per_class_and_contiguous():
    targets = np.repeat([0, 1, 2], [10, 7, 12])
    train, val = kfold_split(targets, 3, 1)
    assert not set(train) & set(val)
    assert sorted(val) == [3, 4, 5, 12, 13, 21, 22, 23, 24]  # chunk 1 of each class (sizes 3, 2, 4)
    assert len(train) == 2 * 3 + 2 * 2 + 2 * 4  # the remainders are dropped, as published


def read_summary(run):
    with open(os.path.join(run, "summary.csv")) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_oriented(tmp_path_factory.mktemp("eval"), classes=3, per_class=8, splits=("train", "val"))


@pytest.fixture(scope="module")
def trunk_ckpt(tmp_path_factory):
    """A 'published' checkpoint of a random 1/16-wide Sobel VGG16."""
    path = tmp_path_factory.mktemp("ckpt") / "ours.pth"
    torch.manual_seed(0)
    net = create_vgg16(sobel=True, img_size=32, width=0.0625)
    torch.save({"state_dict": {f"module.body.{k}": v for k, v in net.body.state_dict().items()}}, path)
    return str(path)


def test_eval_linear_top1_kfold_and_knn(fdsl_cli, folder, trunk_ckpt, tmp_path):
    common = ["--data_path", folder, "--pretrained", trunk_ckpt, "--sobel", "true", *TINY, "--batch_size", "8"]
    code, out, err = fdsl_cli("eval-linear", *common, "--conv", "7", "--nepochs", "8", "--lr", "0.01",
                              "--dump_path", tmp_path / "lin")
    assert code == 0, err
    rows = read_summary(tmp_path / "lin")
    assert len(rows) == 8 and float(rows[-1]["eval_top1"]) > 50  # 3 colours: far above chance (33%)
    assert "conv7" in out and "dims after pooling" in out
    code, out, err = fdsl_cli("eval-linear", *common, "--conv", "3", "--nepochs", "1", "--kfold", "4",
                              "--cross_valid", "1", "--dump_path", tmp_path / "kfold")
    assert code == 0, err and "18 train / 6 val images" in out
    code, out, err = fdsl_cli("eval-linear", *common, "--conv", "10", "--knn", "true")
    assert code == 0 and "k-NN (k=20, T=0.07) on conv10" in out
    code, _, err = fdsl_cli("eval-linear", *common[:4], "--sobel", "false", *TINY)
    assert code == 2 and "pass --sobel true" in err


def test_eval_linear_and_eval_voc_report_map(fdsl_cli, trunk_ckpt, tmp_path):
    voc = make_voc(tmp_path / "VOC2007", per_split=8)
    common = ["--data_path", voc, "--pretrained", trunk_ckpt, "--sobel", "true", *TINY]
    code, out, err = fdsl_cli("eval-linear", *common, "--conv", "5", "--nepochs", "1", "--batch_size", "4",
                              "--dump_path", tmp_path / "lin")
    assert code == 0, err
    assert 0 < float(read_summary(tmp_path / "lin")[0]["eval_mAP"]) <= 100
    for crops in ("true", "false"):
        code, out, err = fdsl_cli("eval-voc", *common, "--nit", "3", "--batch_size", "4", "--eval_random_crops", crops,
                                  "--dump_path", tmp_path / f"voc{crops}")
        assert code == 0, err
        assert "train mAP" in out and "val mAP" in out and "done: VOC07 train -> val mAP" in out
    code, _, err = fdsl_cli("eval-voc", "--data_path", tmp_path / "VOC2007" / "JPEGImages", "--nit", "1",
                            "--dump_path", tmp_path / "bad")
    assert code == 2 and "has no ImageSets/Main" in err


def test_eval_pretrain_trains_from_the_unsupervised_weights(fdsl_cli, folder, trunk_ckpt, tmp_path):
    code, out, err = fdsl_cli("eval-pretrain", "--data_path", folder, "--pretrained", trunk_ckpt, "--sobel", "true",
                              "--sobel2RGB", "true", *TINY, "--batch_size", "8", "--nepochs", "2", "--lr", "0.01",
                              "--dump_path", tmp_path / "pre")
    assert code == 0, err
    assert [r["epoch"] for r in read_summary(tmp_path / "pre")] == ["0", "1"]
    state = torch.load(tmp_path / "pre" / "last.pth.tar", weights_only=True)["state_dict"]
    assert state["net.body.features.0.weight"].shape[1:] == (3, 5, 5)  # Sobel folded into conv1
    code, out, _ = fdsl_cli("eval-pretrain", "--data_path", folder, "--sobel", "true", "--sobel2RGB", "true", *TINY,
                            "--evaluate", "true", "--dump_path", tmp_path / "pre")
    assert code == 0 and "evaluating" in out and "top1" in out
