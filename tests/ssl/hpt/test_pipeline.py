"""`fdsl hpt pretrain|linear` through the engine: exact resume of MoCo and BYOL (N straight == N/2 + resume +
N/2: queue, momentum encoder, tau step, sampler position), the base checkpoint feeding the backbone, the
probe's outputs, and the one-line errors."""
import json
from pathlib import Path

import pytest
import torch

from fdsl.ssl.byol import tau_at
from tests.helpers.runs import make_folder

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread beats two contending ones

TINY = ["--arch", "test_resnet", "--crop-size", "16", "--workers", "0", "--log-interval", "100", "--device", "cpu",
        "--mean", "0.5", "0.5", "0.5", "--std", "0.25", "0.25", "0.25"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("imgs"), classes=3, per_class=8, size=16)


def _ckpt(run):
    return torch.load(Path(run) / "last.pth.tar", weights_only=True)


def _same_states(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("method,extra", [
    ("moco", ["--batch-size", "8", "--queue-size", "16", "--bn-group-size", "4"]),
    ("byol", ["--batch-size", "4", "--accum-steps", "2", "--proj-hidden", "16", "--proj-dim", "8"]),
])
def test_resume_is_exact(images, tmp_path, fdsl_cli, method, extra):
    common = ["hpt", "pretrain", "--method", method, "--train-folder", images, *TINY, *extra, "--iters", "6",
              "--epoch-updates", "4"]
    code, _, err = fdsl_cli(*common, "--output", tmp_path / "straight")
    assert code == 0, err
    code, out, err = fdsl_cli(*common, "--output", tmp_path / "resumed", "--pause-updates", "3")  # mid-epoch 1
    assert code == 0, err
    assert "stopped at epoch 0 step" in out and not (tmp_path / "resumed" / "final_backbone.pth").exists()
    code, out, err = fdsl_cli(*common, "--output", tmp_path / "resumed")
    assert code == 0 and "resumed from" in out, err
    straight, resumed = _ckpt(tmp_path / "straight"), _ckpt(tmp_path / "resumed")
    _same_states(straight["state_dict"], resumed["state_dict"])
    assert straight["method"] == resumed["method"]
    if method == "moco":
        assert straight["method"]["micro_steps"] == 6 and int(straight["state_dict"]["queue_ptr"]) == 6 * 8 % 16
    else:  # published: the 6-iters BYOL budget is 12 steps of 4 x 2, tau counted in forward passes
        assert straight["method"]["updates"] == 12
        assert straight["method"]["tau"] == pytest.approx(tau_at(2 * 11 + 1, 24, 0.99))
    final = [torch.load(Path(tmp_path) / r / "final_backbone.pth", weights_only=True)["state_dict"]
             for r in ("straight", "resumed")]
    _same_states(*final)
    meta = json.loads((tmp_path / "resumed" / "final_backbone.json").read_text())
    assert meta["iters"] == 6 and meta["method"] == method and meta["basetrain"] == "no"
    assert meta["steps"] == (6 if method == "moco" else 12)


def test_base_feeds_the_backbone_and_the_probe_reports(images, tmp_path, fdsl_cli):
    """A MoCo stage from a base backbone, its k-NN log, then a linear probe of its final backbone."""
    import timm

    torch.manual_seed(3)
    base = timm.create_model("test_resnet", num_classes=0).state_dict()
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in base.items()}}, tmp_path / "my-base.pth")
    lst = "".join(f"{p.relative_to(images)} {int(p.parent.name)}\n" for p in sorted(Path(images).rglob("*.png")))
    (Path(images) / "labels.txt").write_text(lst)
    code, out, err = fdsl_cli("hpt", "pretrain", "--train-folder", images, *TINY, "--batch-size", "8",
                              "--queue-size", "16", "--iters", "2", "--base", tmp_path / "my-base.pth",
                              "--knn-train-list", Path(images) / "labels.txt", "--knn-val-list",
                              Path(images) / "labels.txt", "--test-precrop-size", "16", "--dataset", "toy",
                              "--output", tmp_path / "pre")
    assert code == 0, err
    assert "base: loaded" in out and "(prefix 'backbone.')" in out
    knn = [json.loads(line) for line in (tmp_path / "pre" / "knn.jsonl").read_text().splitlines()]
    assert [r["step"] for r in knn] == [0, 2] and all(0 <= r["knn_top1"] <= 100 for r in knn)
    meta = json.loads((tmp_path / "pre" / "final_backbone.json").read_text())
    assert (meta["basetrain"], meta["dataset"], meta["iters"]) == ("my_base", "toy", 2)

    code, out, err = fdsl_cli("hpt", "linear", "--weights", tmp_path / "pre" / "final_backbone.pth", *TINY,
                              "--data-root", images, "--train-list", Path(images) / "labels.txt", "--val-list",
                              Path(images) / "labels.txt", "--test-list", Path(images) / "labels.txt",
                              "--test-precrop-size", "16", "--iters", "4", "--lr", "0.1", "--lr-steps", "2",
                              "--eval-interval", "2", "--batch-size", "8", "--output", tmp_path / "lin")
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "lin" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and {"val_top1", "test_top1"} <= set(rows[0])
    result = json.loads((tmp_path / "lin" / "result.json").read_text())
    assert result["test"] is None  # published: only indices above "1" count, and 2 evaluations have none
    fixed = result["fixed"]  # the second half: the last evaluation
    assert fixed["step"] == 4 and fixed["test"] == rows[1]["test_top1"] and fixed["evals"] == 2
    assert json.loads((tmp_path / "lin" / "run.json").read_text())["expected_evals"] == 2
    probe = torch.load(tmp_path / "lin" / "last.pth.tar", weights_only=True)["state_dict"]
    final = torch.load(tmp_path / "pre" / "final_backbone.pth", weights_only=True)["state_dict"]
    _same_states({k: probe[f"backbone.{k}"] for k in final}, final)  # frozen, BN statistics included


def test_bad_input_is_one_line(images, tmp_path, fdsl_cli):
    code, _, err = fdsl_cli("hpt", "pretrain", "--train-folder", images, *TINY, "--batch-size", "6",
                            "--queue-size", "16", "--output", tmp_path / "q")
    assert code == 2 and "nearest valid sizes: 12 or 18" in err and len(err.strip().splitlines()) == 1
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "odd.pth")
    code, _, err = fdsl_cli("hpt", "pretrain", "--train-folder", images, *TINY, "--batch-size", "8",
                            "--queue-size", "16", "--base", tmp_path / "odd.pth", "--output", tmp_path / "b")
    assert code == 2 and "does not fit the backbone" in err and "missing" in err
    (tmp_path / "bad.txt").write_text("nope/1.png 0\n")
    code, _, err = fdsl_cli("hpt", "pretrain", "--train-list", tmp_path / "bad.txt", *TINY, "--batch-size", "8",
                            "--queue-size", "16", "--output", tmp_path / "l")
    assert code == 2 and "names 1 missing file(s)" in err
    assert not any((tmp_path / d).exists() for d in ("q", "b", "l"))


def test_finetune_trains_the_head_at_100x_by_epoch(images, tmp_path, fdsl_cli):
    lst = "".join(f"{p.relative_to(images)} {int(p.parent.name)}\n" for p in sorted(Path(images).rglob("*.png")))
    (Path(images) / "ft.txt").write_text(lst)
    labels = Path(images) / "ft.txt"
    code, _, err = fdsl_cli("hpt", "finetune", "--weights", "", *TINY, "--data-root", images, "--train-list",
                              labels, "--val-list", labels, "--test-list", labels, "--test-precrop-size", "16",
                              "--by", "epoch", "--epochs", "2", "--lr-steps", "1", "--lr", "0.01",
                              "--batch-size", "4", "--accum-steps", "2", "--eval-interval", "1",
                              "--output", tmp_path / "ft")
    assert code == 0, err
    ckpt = torch.load(tmp_path / "ft" / "last.pth.tar", weights_only=True)
    backbone_lr, head_lr = (g["lr"] for g in ckpt["optimizer"]["param_groups"])
    assert backbone_lr == pytest.approx(0.001) and head_lr == pytest.approx(0.1)  # after the drop at epoch 1
    rows = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1] and rows[0]["step"] == 3  # 24 images / 4 = 6 batches / 2


@pytest.mark.slow
def test_finetune_by_iter_evaluates_every_n_forward_passes_as_published(images, tmp_path, fdsl_cli):
    """6 steps of 2 x 4 accumulated. Evaluations every 2 passes: at passes 2, 4, ... (steps 0.5, 1, ...; half
    of them between optimiser steps), as the published ValidateHook. Every 4 passes they fall after steps
    1..6: the same values as the mid-step run's at those passes and as the schedule counted in steps with the
    equivalent drop; evaluating between steps leaves the training as it was."""
    lst = "".join(f"{p.relative_to(images)} {int(p.parent.name)}\n" for p in sorted(Path(images).rglob("*.png")))
    (Path(images) / "ft.txt").write_text(lst)
    labels = Path(images) / "ft.txt"
    common = ["hpt", "finetune", "--weights", "", *TINY, "--data-root", images, "--train-list", labels,
              "--val-list", labels, "--test-list", labels, "--test-precrop-size", "16", "--iters", "6",
              "--batch-size", "2", "--accum-steps", "4"]

    def rows(name, *extra):
        code, _, err = fdsl_cli(*common, *extra, "--output", tmp_path / name)
        assert code == 0, err
        meta = json.loads((tmp_path / name / "run.json").read_text())
        out = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        assert len(out) == meta["expected_evals"]
        return out

    def scores(rs):
        return [(r["val_top1"], r["test_top1"]) for r in rs]

    mid = rows("mid", "--eval-interval", "2", "--lr-steps", "9")  # lr x 0.1 from pass 9 = before step 2
    assert [(r["passes"], r["step"]) for r in mid] == [(2 * k, k / 2) for k in range(1, 13)]
    ckpt = torch.load(tmp_path / "mid" / "last.pth.tar", weights_only=True)
    assert ckpt["method"]["passes"] == 24 and ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3)
    on_steps = rows("on", "--eval-interval", "4", "--lr-steps", "9")
    fixed = rows("fixed", "--eval-interval", "1", "--published-schedule", "false", "--lr-steps", "2")
    assert [r["step"] for r in on_steps] == [r["step"] for r in fixed] == [1, 2, 3, 4, 5, 6]
    assert scores(on_steps) == scores(fixed) == scores(mid[1::2])
    last = {name: torch.load(tmp_path / name / "last.pth.tar", weights_only=True)["state_dict"]
            for name in ("mid", "on", "fixed")}
    _same_states(last["on"], last["fixed"])
    _same_states(last["mid"], last["on"])
