"""HPT tools: base loading, backbone extraction, detectron2 names, label lists and subsets, mean-std, the
project generator, runner markers under concurrent runners, aggregation and plots."""
import json
import multiprocessing
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml
from PIL import Image

from fdsl.data.image_list import ImageList, balanced_subset, read_list
from fdsl.errors import UserError
from fdsl.ssl.backbone import create_backbone, detectron2_key, extract_backbone, load_base, to_detectron2
from fdsl.ssl.hpt import records
from fdsl.study.hpt import project, results, runner

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread beats two contending ones


def _json(path):
    return json.loads(Path(path).read_text())


def _yaml(path):
    return yaml.safe_load(Path(path).read_text())


@pytest.fixture(scope="module")
def r50_state():
    torch.manual_seed(0)
    return torchvision.models.resnet50().state_dict()


def test_extract_backbone_from_moco_byol_and_official_checkpoints(tmp_path, r50_state):
    """OpenSelfSup/fdsl MoCo on a torchvision ResNet-50; the other layouts on a ResNet-18 (same key logic)."""
    r18 = torchvision.models.resnet18().state_dict()
    files = {
        "oss_moco": (r50_state, lambda body: {
            **{f"encoder_q.0.{k}": v for k, v in body.items()}, "encoder_q.1.0.weight": torch.zeros(4, 2048),
            **{f"encoder_k.0.{k}": v for k, v in body.items() if k.startswith("layer4")}, "queue": torch.zeros(8, 4)}),
        "byol": (r18, lambda body: {**{f"online_net.0.{k}": v for k, v in body.items()},
                                    **{f"target_net.0.{k}": v for k, v in body.items() if k.startswith("layer4")}}),
        "official_moco": (r18, lambda body: {**{f"module.encoder_q.{k}": v for k, v in body.items()},
                                             "module.encoder_q.fc.0.weight": torch.zeros(2, 512),
                                             "module.encoder_q.fc.2.weight": torch.zeros(2, 2),
                                             "module.queue": torch.zeros(8, 4)}),
        "supervised": (r18, lambda body: {**body, "fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)}),
    }
    for name, (state, layout) in files.items():
        body = {k: v for k, v in state.items() if not k.startswith("fc.")}
        torch.save({"state_dict": layout(body)}, tmp_path / f"{name}.pth")
        out = tmp_path / f"{name}-backbone.pth"
        assert extract_backbone(str(tmp_path / f"{name}.pth"), str(out), {"basetrain": name}) == len(body)
        saved = torch.load(out, weights_only=True)
        assert saved["author"] == "fdsl" and set(saved["state_dict"]) == set(body), name
        assert all(torch.equal(saved["state_dict"][k], v) for k, v in body.items()), name
        assert _json(tmp_path / f"{name}-backbone.json") == {"basetrain": name}
    with pytest.raises(UserError, match="must end in .pth"):
        extract_backbone(str(tmp_path / "byol.pth"), str(tmp_path / "x.pt"))


def test_detectron2_key_renaming(tmp_path, r50_state):
    expected = {"conv1.weight": "stem.conv1.weight", "bn1.running_var": "stem.conv1.norm.running_var",
                "layer1.0.conv1.weight": "res2.0.conv1.weight", "layer1.2.bn3.bias": "res2.2.conv3.norm.bias",
                "layer2.0.downsample.0.weight": "res3.0.shortcut.weight",
                "layer4.0.downsample.1.running_mean": "res5.0.shortcut.norm.running_mean",
                "module.layer3.5.bn2.weight": "res4.5.conv2.norm.weight"}
    assert {k: detectron2_key(k) for k in expected} == expected
    torch.save({"state_dict": r50_state}, tmp_path / "bb.pth")
    n = to_detectron2(str(tmp_path / "bb.pth"), str(tmp_path / "d2.pkl"))
    with open(tmp_path / "d2.pkl", "rb") as f:
        d2 = pickle.load(f)
    assert d2["matching_heuristics"] is True and d2["__author__"] == "fdsl"
    assert n == len(d2["model"]) == 318  # every backbone key, the 53 num_batches_tracked included (published)
    assert int(d2["model"]["res4.5.conv2.norm.num_batches_tracked"]) == int(r50_state["layer3.5.bn2.num_batches_tracked"])
    assert isinstance(d2["model"]["res5.2.conv3.norm.weight"], np.ndarray)
    np.testing.assert_array_equal(d2["model"]["stem.conv1.weight"], r50_state["conv1.weight"].numpy())


def test_base_weights_load_from_any_prefix_and_mismatches_are_named(tmp_path):
    torch.manual_seed(0)
    tv18 = torchvision.models.resnet18().state_dict()
    torch.save({"arch": "resnet18", "state_dict": tv18, "epoch": 3}, tmp_path / "fdsl.pth.tar")  # fdsl classifier
    torch.save({"state_dict": {f"encoder_q.0.{k}": v for k, v in tv18.items()}}, tmp_path / "moco.pth")
    for name in ("fdsl.pth.tar", "moco.pth"):
        backbone = create_backbone("resnet18")
        logs = []
        load_base(backbone, str(tmp_path / name), log=logs.append)
        assert torch.equal(backbone.state_dict()["layer4.1.bn2.weight"], tv18["layer4.1.bn2.weight"])
        assert "loaded" in logs[0]
    assert load_base(create_backbone("resnet18"), "", log=logs.append).startswith("random init (OpenSelfSup")
    with pytest.raises(UserError, match=r"\(resnet18\) does not fit the backbone: 80 backbone keys missing \(layer1.2"):
        load_base(create_backbone("resnet34"), str(tmp_path / "fdsl.pth.tar"))  # resnet34 has more blocks
    wide = {k: torch.zeros(v.shape[0] * 2, *v.shape[1:]) if k == "layer1.0.conv1.weight" else v for k, v in tv18.items()}
    torch.save(wide, tmp_path / "wide.pth")
    with pytest.raises(UserError, match=r"1 shape mismatches \(layer1.0.conv1.weight \(128, 64, 3, 3\) vs"):
        load_base(create_backbone("resnet18"), str(tmp_path / "wide.pth"))


def _write_images(root, n, size=(12, 10), color=None):
    os.makedirs(root, exist_ok=True)
    paths = []
    for i in range(n):
        rgb = color if color is not None else ((i * 37) % 256, (i * 91) % 256, (i * 13) % 256)
        path = os.path.join(root, f"img{i}.png")
        Image.new("RGB", size, rgb).save(path)
        paths.append(path)
    return paths


def test_label_lists_missing_files_and_multi_label(tmp_path):
    _write_images(tmp_path / "imgs", 3)
    (tmp_path / "ok.txt").write_text("imgs/img0.png 2\nimgs/img1.png 0\n")
    ds = ImageList(str(tmp_path / "ok.txt"))
    assert ds.num_classes == 3 and [t for _, t in ds.samples] == [2, 0]
    (tmp_path / "multi.txt").write_text("imgs/img0.png 1.0,,-1.0\nimgs/img1.png 0.0,1.0,1.0\n")
    ds = ImageList(str(tmp_path / "multi.txt"), class_map={"1.0": 1, "0.0": 0, "-1.0": 0, "": 0})
    assert ds.multi_label and ds.samples[0][1].tolist() == [1.0, 0.0, 0.0] and ds.num_classes == 3
    (tmp_path / "bad.txt").write_text("imgs/img0.png 1\nimgs/nope.png 0\nimgs/gone.png 1\n")
    with pytest.raises(UserError, match=r"names 2 missing file\(s\), e.g. .*nope.png"):
        read_list(str(tmp_path / "bad.txt"))


def test_label_subsets_are_deterministic_and_balanced(tmp_path):
    lines = [f"c{c}/img{i}.png {c}" for c in range(4) for i in range(10 + 5 * c)]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    first = balanced_subset(str(tmp_path / "train.txt"), 22, seed=0)
    assert first == str(tmp_path / "train-22.txt")
    chosen = (tmp_path / "train-22.txt").read_text().splitlines()
    counts = [sum(1 for line in chosen if line.endswith(f" {c}")) for c in range(4)]
    assert sorted(counts) == [5, 5, 6, 6] and len(set(chosen)) == 22
    assert chosen == [line for line in lines if line in set(chosen)]  # original order kept
    balanced_subset(str(tmp_path / "train.txt"), 22, seed=0, out=str(tmp_path / "again.txt"))
    assert (tmp_path / "again.txt").read_text() == (tmp_path / "train-22.txt").read_text()
    balanced_subset(str(tmp_path / "train.txt"), 22, seed=1, out=str(tmp_path / "other.txt"))
    assert (tmp_path / "other.txt").read_text() != (tmp_path / "train-22.txt").read_text()


def test_mean_std_counts_each_image_once(tmp_path, fdsl_cli):
    _write_images(tmp_path / "a" / "x", 1, size=(4, 4), color=(255, 0, 0))
    _write_images(tmp_path / "a" / "y", 1, size=(40, 40), color=(0, 0, 255))
    code, out, _ = fdsl_cli("mean-std", tmp_path / "a", "--numworkers", "0", "--no-progress")
    assert code == 0
    assert "means: [0.5000, 0.0000, 0.5000]" in out and "stds:  [0.5000, 0.0000, 0.5000]" in out


@pytest.fixture
def proj(tmp_path):
    """A small generated project: 2 classes x 6 images, lists, one base checkpoint and random init."""
    paths = _write_images(tmp_path / "data" / "imgs", 12)
    rel = [os.path.relpath(p, tmp_path / "data") for p in paths]
    (tmp_path / "data" / "all.txt").write_text("\n".join(rel) + "\n")
    for name, part in (("train", rel[:8]), ("val", rel[8:10]), ("test", rel[10:])):
        (tmp_path / "data" / f"{name}.txt").write_text("".join(f"{p} {i % 2}\n" for i, p in enumerate(part)))
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "moco_v2-800ep.pth")
    cfg = {"shortname": "toy", "arch": "resnet18", "crop_size": 16, "test_precrop_size": 18,
           "data": {"root": str(tmp_path / "data"), "pretrain_list": "all.txt", "train_list": "train.txt",
                    "val_list": "val.txt", "test_list": "test.txt", "num_classes": 2, "mean": [0.5] * 3,
                    "std": [0.25] * 3},
           "base_weights": [str(tmp_path / "moco_v2-800ep.pth"), ""], "bt_iters": [2, 4], "no_bt_iters": [4],
           "bn_iters": [4], "methods": ["moco", "byol"], "pretrain": {"batch_size": 4},
           "linear": {"iters": 6, "reruns": 2, "eval_interval": 2},
           "finetune": {"num_train_labels": [4, "all"], "lrs": [0.01], "by_epoch": 2, "by_iter": 4,
                        "by_iter_lr_steps": [2, 3], "by_epoch_lr_steps": [1]}}
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path


def test_project_layout_and_unknown_keys(proj, fdsl_cli):
    code, _, err = fdsl_cli("hpt", "project", proj / "toy.yaml", "--out", proj / "hpt")
    assert code == 0, err
    configs = sorted(os.path.relpath(os.path.join(d, f), proj / "hpt" / "configs")
                     for d, _, fs in os.walk(proj / "hpt" / "configs") for f in fs)
    assert configs == sorted([
        "pretrain/moco_v2_800ep_basetrain/2-iters.yaml", "pretrain/moco_v2_800ep_basetrain/4-iters.yaml",
        "pretrain/moco_v2_800ep_basetrain/2byol-iters.yaml", "pretrain/moco_v2_800ep_basetrain/4byol-iters.yaml",
        "pretrain/moco_v2_800ep_basetrain/4bn-iters.yaml", "pretrain/no_basetrain/4-iters.yaml",
        "pretrain/no_basetrain/4byol-iters.yaml",
        "linear-eval/linear-eval-lr-s0.yaml", "linear-eval/linear-eval-lr-s1.yaml",
        "finetune/4-labels/4-iter-0_01-lr-finetune.yaml", "finetune/4-labels/2-epoch-0_01-lr-finetune.yaml",
        "finetune/all-labels/4-iter-0_01-lr-finetune.yaml", "finetune/all-labels/2-epoch-0_01-lr-finetune.yaml"])
    pre = _yaml(proj / "hpt/configs/pretrain/no_basetrain/4-iters.yaml")
    assert pre["checkpoint_interval"] == 2 and pre["base"] == "" and pre["batch_size"] == 4  # N/2 from scratch
    bn = _yaml(proj / "hpt/configs/pretrain/moco_v2_800ep_basetrain/4bn-iters.yaml")
    assert bn["bn_only"] and bn["method"] == "moco" and bn["checkpoint_interval"] == 4
    lin = _yaml(proj / "hpt/configs/linear-eval/linear-eval-lr-s1.yaml")
    assert lin["seed"] == 1 and lin["lr_steps"] == [2, 4] and lin["lr"] == 30  # 1651/3333 of 5000, scaled
    ft = _yaml(proj / "hpt/configs/finetune/4-labels/4-iter-0_01-lr-finetune.yaml")
    assert ft["train_list"].endswith("lists/train-4.txt") and ft["head_lr_mult"] == 100
    assert len((proj / "hpt/lists/train-4.txt").read_text().splitlines()) == 4
    from fdsl.cli import hpt_options
    from fdsl.cli.hpt import _stage_parser
    from fdsl.ssl.hpt import options

    for rel in configs:  # every generated config is a valid set of options of its stage
        table = options.PRETRAIN if rel.startswith("pretrain") else options.PROBE
        parser = _stage_parser("x", table, "")
        args = hpt_options.parse(parser, ["--config", str(proj / "hpt" / "configs" / rel)], table)
        assert args.output and args.arch == "resnet18", rel

    bad = _yaml(proj / "toy.yaml")
    bad["linear"]["itres"] = 5
    (proj / "bad.yaml").write_text(yaml.safe_dump(bad))
    code, _, err = fdsl_cli("hpt", "project", proj / "bad.yaml", "--out", proj / "bad")
    assert code == 2 and "unknown key 'itres'; did you mean 'iters'?" in err
    bad = _yaml(proj / "toy.yaml")
    bad["pretrain"] = {"queue": 16}
    (proj / "bad.yaml").write_text(yaml.safe_dump(bad))
    code, _, err = fdsl_cli("hpt", "project", proj / "bad.yaml", "--out", proj / "bad")
    assert code == 2 and "did you mean 'queue_size'?" in err
    assert not (proj / "bad").exists()


def _runner_process(root, log_path, barrier):
    def fake(job):
        with open(log_path, "a") as f:
            f.write(job.name + "\n")
        time.sleep(0.05)
        return True

    barrier.wait()
    runner.run_jobs(runner.pretrain_jobs(root), fake, log=lambda *_: None)


def test_two_concurrent_runners_share_the_jobs_through_markers(proj):
    root = project.generate(str(proj / "toy.yaml"), str(proj / "hpt"), log=lambda *_: None)
    jobs = runner.pretrain_jobs(root)
    assert len(jobs) == 7
    barrier = multiprocessing.get_context("fork").Barrier(2)
    log_path = str(proj / "ran.txt")
    procs = [multiprocessing.get_context("fork").Process(target=_runner_process, args=(root, log_path, barrier))
             for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    ran = Path(log_path).read_text().split()
    assert sorted(ran) == sorted(j.name for j in jobs)  # each job exactly once
    assert all(os.path.exists(j.done) and not os.path.exists(j.proc) for j in jobs)

    os.remove(jobs[0].done)  # redo one stage by deleting its marker
    again = []
    assert runner.run_jobs(runner.pretrain_jobs(root), lambda j: again.append(j.name) or True, log=lambda *_: None) \
        == (1, 6)
    assert again == [jobs[0].name]
    assert [j.name for j in runner.pretrain_jobs(root, trial=True)] == ["pretrain/moco_v2_800ep_basetrain/2-iters",
                                                                      "pretrain/moco_v2_800ep_basetrain/2byol-iters"]
    assert len(runner.pretrain_jobs(root, byol=True)) == 3 and len(runner.pretrain_jobs(root, bn=True)) == 1

    os.remove(jobs[1].done)
    with pytest.raises(UserError, match="failed"):
        runner.run_jobs([jobs[1]], lambda j: False, log=lambda *_: None)
    assert not os.path.exists(jobs[1].proc) and not os.path.exists(jobs[1].done)


def _fake_eval(workdir, val, test, expected):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps({"step": 10 * (i + 1), "val_top1": v, "test_top1": t}) + "\n"
                     for i, (v, t) in enumerate(zip(val, test)))
    with open(os.path.join(workdir, "run.json"), "w") as f:
        json.dump({"expected_evals": expected, "started": "2024-01-01T00:00:00"}, f)


def test_aggregation_takes_test_at_best_val_of_the_second_half(proj, capsys):
    root = project.generate(str(proj / "toy.yaml"), str(proj / "hpt"), log=lambda *_: None)
    lin = os.path.join(root, "work", "linear-eval")
    # 12 evaluations: the best val overall is in the first half (ignored); in the second half the best is
    # index 9 (string order would pick "9" > "10" wrongly only for the index; the value decides here)
    val = [99, 10, 10, 10, 10, 10, 20, 30, 30, 50, 40, 50]
    test = [1, 2, 3, 4, 5, 6, 7, 8, 9, 60, 11, 12]
    _fake_eval(os.path.join(lin, "moco_v2_800ep_basetrain", "4-iters-linear-eval-lr-s0"), val, test, 12)
    _fake_eval(os.path.join(lin, "moco_v2_800ep_basetrain", "4-iters-linear-eval-lr-s1"), val, test, 12)
    _fake_eval(os.path.join(lin, "moco_v2_800ep_basetrain", "0-iters-linear-eval-lr-s0"), [5, 6], [7, 8], 2)
    _fake_eval(os.path.join(lin, "moco_v2_800ep-src_50it_basetrain", "4bn-iters-linear-eval-lr-s0"), [5, 6],
               [7, 9], 2)
    _fake_eval(os.path.join(lin, "no_basetrain", "4byol-iters-linear-eval-lr-s0"), [1, 2, 3], [4, 5, 6], 12)
    _fake_eval(os.path.join(root, "work", "finetune", "4-labels", "no_basetrain",
                            "4-iters-4-iter-0_01-lr-finetune"), [1, 2, 3, 4], [3, 4, 5, 6], 4)
    records = {r["file"]: r for r in results.collect(root)}
    assert "INCOMPLETE linear-eval/no_basetrain/4byol-iters-linear-eval-lr-s0: 3 of 12" in capsys.readouterr().err
    r = records["linear-eval/moco_v2_800ep_basetrain/4-iters-linear-eval-lr-s1"]
    assert (r["result"], r["val"], r["best_step"], r["sample"], r["variant"]) == (60, 50, 100, 1, "linear-eval-lr")
    assert r["complete"] and r["steps"] == 4 and r["method"] == "moco" and r["basetrain"] == "moco_v2_800ep"
    h = records["linear-eval/moco_v2_800ep-src_50it_basetrain/4bn-iters-linear-eval-lr-s0"]
    assert (h["basetrain"], h["pretrain_data"], h["bn_only"], h["pretrain_iters"]) == ("moco_v2_800ep", "src_50it",
                                                                                        True, "4bn")
    b = records["linear-eval/no_basetrain/4byol-iters-linear-eval-lr-s0"]
    assert (b["basetrain"], b["pretrain_data"], b["method"], b["complete"]) == ("no", "toy", "byol", False)
    f = records["finetune/4-labels/no_basetrain/4-iters-4-iter-0_01-lr-finetune"]
    assert f["subset"] == "4-labels" and f["result_type"] == "finetune" and f["result"] == 6  # index 3 > "2"
    [path] = results.write(root, list(records.values()))
    assert path.endswith("results/toy_results.json") and len(_json(path)) == 6
    results.write(root, [dict(r, result=1.0)])  # re-aggregation updates the record in place
    assert _json(path)[r["file"]]["result"] == 1.0 and len(_json(path)) == 6

    from fdsl.study.hpt import plots

    made = plots.linear_plot(list(records.values()), "toy", os.path.join(root, "plots"))
    made += plots.finetune_plots(list(records.values()), "toy", os.path.join(root, "plots"))
    knn_dir = os.path.join(root, "work", "pretrain", "no_basetrain", "4-iters")
    os.makedirs(knn_dir)
    Path(knn_dir, "knn.jsonl").write_text("".join(json.dumps({"step": s, "knn_top1": 10.0 + s}) + "\n"
                                                  for s in (0, 2, 4)))
    made += plots.knn_plot(root, "toy", os.path.join(root, "plots"))
    assert sorted(os.path.basename(p) for p in made) == ["toy_finetune-4-labels.pdf", "toy_finetune-4-labels.png",
                                                         "toy_knn.pdf", "toy_knn.png", "toy_linear_eval.pdf",
                                                         "toy_linear_eval.png"]
    assert all(os.path.getsize(p) > 1000 for p in made)


def test_metrics_top1_and_per_class_auroc():
    from fdsl.eval.transfer import classification_metrics

    logits = torch.tensor([[3.0, 1, 0, 0, 0, 0], [0, 3.0, 1, 0, 0, 0], [0, 0, 0, 0, 1, 3.0]])
    m = classification_metrics(logits, torch.tensor([0, 2, 4]))
    assert m["top1"] == pytest.approx(100 / 3) and m["top5"] == pytest.approx(100.0)
    scores = torch.tensor([[2.0, 0.1, 1.0], [1.0, 0.2, -1.0], [-1.0, 0.3, 0.5], [-2.0, 0.4, 0.0]])
    truth = torch.tensor([[1.0, 1, 0], [1, 1, 1], [0, 1, 0], [0, 1, 1]])
    m = classification_metrics(scores, truth)
    assert m["auroc_0"] == pytest.approx(100.0) and m["auroc_2"] == pytest.approx(0.0)
    assert m["auroc_1"] is None and m["auroc"] == pytest.approx(50.0)  # one-valued class: no AUROC, not 0


def test_a_source_backbone_names_the_chain(tmp_path):
    """base -> source -> target: a final_backbone.pth from another project is named by its .json."""
    from fdsl.ssl.backbone import write_json_atomic

    src = tmp_path / "resisc" / "work" / "pretrain" / "moco_v2_800ep_basetrain" / "50000-iters"
    src.mkdir(parents=True)
    torch.save({"state_dict": {}}, src / "final_backbone.pth")
    write_json_atomic({"basetrain": "moco_v2_800ep", "dataset": "resisc", "iters": 50000},
                      str(src / "final_backbone.json"))
    assert records.base_name(str(src / "final_backbone.pth")) == "moco_v2_800ep-resisc_50000it"
    assert records.base_name(str(tmp_path / "imagenet_r50-21352794.pth")) == "imagenet_r50_21352794"
    record = results.parse_run_path("linear-eval/moco_v2_800ep-resisc_50000it_basetrain/500-iters-linear-eval-lr-s2")
    assert (record["basetrain"], record["pretrain_data"], record["steps"], record["sample"]) == \
        ("moco_v2_800ep", "resisc_50000it", 500, 2)


def test_linear_eval_drops_are_the_published_1651_3333():
    """The generated linear-eval config and `fdsl hpt linear` agree with the published template (1651, 3333;
    the generator used to write 1668)."""
    from fdsl.ssl.hpt.options import PROBE

    p = project._merge({"shortname": "x", "data": {"mean": [0.5] * 3, "std": [0.2] * 3, "num_classes": 2,
                                                   "train_list": "t", "val_list": "v", "test_list": "e"}},
                       project.DEFAULTS, "x")
    configs = project.linear_configs(p)
    assert sorted(configs) == [f"linear-eval/linear-eval-lr-s{k}.yaml" for k in range(3)]
    assert {tuple(c["lr_steps"]) for c in configs.values()} == {(1651, 3333)} == {tuple(PROBE["lr_steps"][0])}
    p["linear"]["lr"] = [3.0, 30.0]  # a sweep names each lr
    assert "linear-eval/linear-eval-lr3-s0.yaml" in project.linear_configs(p)
    p["linear"].update({"lr": 30.0, "seed": 2, "reruns": 1})  # one seed of a per-seed study, named by it
    configs = project.linear_configs(p)
    assert list(configs) == ["linear-eval/linear-eval-lr-s2.yaml"] and configs[
        "linear-eval/linear-eval-lr-s2.yaml"]["seed"] == 2


@pytest.mark.parametrize("arch", ["resnet50", "torchvision:resnet50"])
def test_random_init_is_openselfsup_kaiming_fan_in_with_every_bn_gamma_1(arch):
    """The no-base baselines start as the published OpenSelfSup ResNet.init_weights: each conv's weight std is
    sqrt(2 / fan_in) (timm/torchvision: fan_out), every BN gamma 1 and beta 0 (timm zeroes each block's last BN)."""

    torch.manual_seed(0)
    own = create_backbone(arch)
    if arch == "resnet50":  # what the library alone gives: the last BN of each block at 0
        assert all(float(m.bn3.weight.detach().abs().max()) == 0 for m in own.modules() if hasattr(m, "bn3"))
    backbone = create_backbone(arch)
    load_base(backbone, "", log=lambda _: None)
    convs = [(n, m) for n, m in backbone.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 53
    ratios = []
    for name, m in convs:
        fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        ratios.append(float(m.weight.detach().std()) / (2 / fan_in) ** 0.5)
        assert abs(ratios[-1] - 1) < 0.06, name  # >= 4096 samples per layer: ~1% sampling error
    assert abs(sum(ratios) / len(ratios) - 1) < 0.01
    bns = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 53 and all(bool((m.weight.detach() == 1).all() and (m.bias.detach() == 0).all()) for m in bns)
    kept = create_backbone(arch)
    state = {k: v.clone() for k, v in kept.state_dict().items()}
    load_base(kept, "", log=lambda _: None, random_init="model")  # the flag that keeps the library's init
    assert all(torch.equal(v, kept.state_dict()[k]) for k, v in state.items())
    with pytest.raises(UserError, match="--random-init 'kaiming'"):
        load_base(kept, "", random_init="kaiming")


def test_published_selection_compares_indices_as_strings():
    """agg-results.sh: `[[ $ct > $afterlen ]]` compares strings, so with 50 evaluations the best val may come
    from evaluations 3..9 (e.g. an early peak); --selection fixed keeps the second half only."""
    assert records.late_evaluations(50) == [3, 4, 5, 6, 7, 8, 9, *range(26, 50)]
    assert records.late_evaluations(50, "fixed") == list(range(25, 50))
    assert records.late_evaluations(400)[:10] == [3, 4, 5, 6, 7, 8, 9, 21, 22, 23]
    assert len(records.late_evaluations(400)) == 7 + 79 + 199
    val = [10.0] * 50
    val[5], val[30] = 90.0, 80.0
    test = [float(i) for i in range(50)]
    assert records.best_val_test(val, test) == (5, 90.0, 5.0)
    assert records.best_val_test(val, test, "fixed") == (30, 80.0, 30.0)


def test_project_uses_the_published_subset_list_beside_the_train_list(proj):
    (proj / "data" / "train-4.txt").write_text((proj / "data" / "train.txt").read_text().splitlines()[0] + "\n")
    root = project.generate(str(proj / "toy.yaml"), str(proj / "hpt"), log=lambda *_: None)
    ft = _yaml(os.path.join(root, "configs/finetune/4-labels/4-iter-0_01-lr-finetune.yaml"))
    assert ft["train_list"] == str(proj / "data" / "train-4.txt") and not os.path.exists(os.path.join(root, "lists"))
    assert ft["published_schedule"] is True and ft["random_init"] == "auto"
    pre = _yaml(os.path.join(root, "configs/pretrain/no_basetrain/4byol-iters.yaml"))
    assert pre["published_schedule"] is True and pre["random_init"] == "auto"


def test_published_auroc_counts_a_one_valued_class_as_0():
    rows = [{"val_auroc": 80.0, "val_auroc_0": 70.0, "val_auroc_1": 90.0, "val_auroc_2": None}]
    assert records.series(rows, "val") == [pytest.approx(160 / 3)]  # agg-results.sh: the mean of all classes
    assert records.series(rows, "val", "fixed") == [80.0]
