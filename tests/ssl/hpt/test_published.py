"""fdsl's HPT tools side by side with the published scripts (github cjrd/self-supervised-pretraining), run
on the same inputs. Point FDSL_HPT_PUBLISHED at an unpacked copy of that repository (the folder holding
OpenSelfSup/ and utils/):

    git -C <mirror> archive HEAD | tar -x -C /tmp/hpt_pub
    FDSL_HPT_PUBLISHED=/tmp/hpt_pub pytest tests/ssl/hpt/test_published.py

Without it (CI has no network to fetch it) every test here is skipped."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision

from fdsl.ssl.backbone import extract_backbone, to_detectron2
from fdsl.ssl.hpt import records
from fdsl.study.hpt import results

PUBLISHED = os.environ.get("FDSL_HPT_PUBLISHED", "")
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not os.path.isdir(os.path.join(PUBLISHED, "OpenSelfSup")),
                                 reason="FDSL_HPT_PUBLISHED does not point at the published repository")]


def _published(*parts: str) -> str:
    return os.path.join(PUBLISHED, *parts)


def _run(script: str, *args) -> None:
    subprocess.run([sys.executable, script, *map(str, args)], check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def moco_checkpoint(tmp_path_factory):
    """An OpenSelfSup MoCo iter_N.pth: the backbone under encoder_q.0. and its alias backbone., neck, queue."""
    torch.manual_seed(0)
    body = torchvision.models.resnet50().state_dict()
    body = {k: v for k, v in body.items() if not k.startswith("fc.")}
    sd = {**{f"encoder_q.0.{k}": v for k, v in body.items()}, **{f"backbone.{k}": v for k, v in body.items()},
          **{f"encoder_k.0.{k}": v + 1 for k, v in body.items()}, "encoder_q.1.mlp.0.weight": torch.zeros(8, 2048),
          "queue": torch.zeros(128, 16), "queue_ptr": torch.zeros(1, dtype=torch.long)}
    path = tmp_path_factory.mktemp("ckpt") / "iter_50.pth"
    torch.save({"meta": {"iter": 50}, "state_dict": sd}, path)
    return path, body


def test_extract_matches_the_published_extractor(tmp_path, moco_checkpoint):
    ckpt, body = moco_checkpoint
    _run(_published("OpenSelfSup", "tools", "extract_backbone_weights.py"), ckpt, tmp_path / "pub.pth")
    assert extract_backbone(str(ckpt), str(tmp_path / "fdsl.pth")) == len(body) == 318
    pub = torch.load(tmp_path / "pub.pth", weights_only=True)
    ours = torch.load(tmp_path / "fdsl.pth", weights_only=True)
    assert list(ours["state_dict"]) == list(pub["state_dict"])  # same keys, same order
    assert all(torch.equal(ours["state_dict"][k], v) and ours["state_dict"][k].dtype == v.dtype
               for k, v in pub["state_dict"].items())
    assert (pub["author"], ours["author"]) == ("OpenSelfSup", "fdsl")  # the one field that differs


def test_detectron2_file_matches_the_published_converter(tmp_path, moco_checkpoint):
    ckpt, _ = moco_checkpoint
    extract_backbone(str(ckpt), str(tmp_path / "final_backbone.pth"))
    _run(_published("OpenSelfSup", "benchmarks", "detection", "convert-pretrain-to-detectron2.py"),
         tmp_path / "final_backbone.pth", tmp_path / "pub.pth")
    assert to_detectron2(str(tmp_path / "final_backbone.pth"), str(tmp_path / "fdsl.pth")) == 318
    pub = torch.load(tmp_path / "pub.pth", weights_only=False)
    ours = torch.load(tmp_path / "fdsl.pth", weights_only=False)
    assert list(ours["model"]) == list(pub["model"]) and len(pub["model"]) == 318
    for key, value in pub["model"].items():
        assert ours["model"][key].dtype == value.dtype and ours["model"][key].shape == value.shape, key
        np.testing.assert_array_equal(ours["model"][key], value)
    assert set(ours) == set(pub) and ours["matching_heuristics"] is pub["matching_heuristics"] is True
    assert (pub["__author__"], ours["__author__"]) == ("OpenSelfSup", "fdsl")


RUNS = [  # run folders as fdsl hpt run names them (the published layout), with the values of one evaluation
    ("linear-eval/no_basetrain/5000-iters-linear-eval-lr-s0", 61.25),
    ("linear-eval/no_basetrain/0-iters-linear-eval-lr-s2", 10.5),
    ("linear-eval/moco_v2_800ep_basetrain/50-iters-linear-eval-lr-s1", 88.0),
    ("linear-eval/moco_v2_800ep_basetrain/5000bn-iters-linear-eval-lr-s0", 87.5),
    ("linear-eval/imagenet_r50_21352794_basetrain/500-iters-linear-eval-lr-s0", 80.0),
    ("linear-eval/moco_v2_800ep-resisc_50000it_basetrain/500-iters-linear-eval-lr-s2", 90.25),
    ("linear-eval/no-resisc_5000it_basetrain/50-iters-linear-eval-lr-s0", 40.0),
    ("finetune/1000-labels/moco_v2_800ep_basetrain/5000-iters-2500-iter-0_01-lr-finetune", 70.0),
    ("finetune/all-labels/no_basetrain/0-iters-90-epoch-0_001-lr-finetune", 55.5),
]
FIELDS = ("dataset", "result_type", "subset", "basetrain", "pretrain_data", "pretrain_iters", "sample", "variant",
          "result")


def test_records_match_the_published_agg_results_to_final_json(tmp_path):
    """The same run paths, as published `agg-results.sh` lines (`<dataset>/<run>/<log> ::: <value>`) through
    the published agg-results-to-final-json.py, and through fdsl's parser: the fields the published plot
    scripts read are equal."""
    lines = [f"ucmerced/{rel}/20240101_000000.log.json ::: {value}\n" for rel, value in RUNS]
    (tmp_path / "results.txt").write_text("".join(lines))
    _run(_published("utils", "agg-results-to-final-json.py"), "--agg-file", tmp_path / "results.txt",
         "--outdir", tmp_path / "out")
    published = json.loads((tmp_path / "out" / "ucmerced_results.json").read_text())
    assert len(published) == len(RUNS)
    for (rel, value), pub in zip(RUNS, published.values()):
        ours = dict(results.parse_run_path(rel, "ucmerced"), dataset="ucmerced", result=value)
        assert {f: ours[f] for f in FIELDS} == {f: pub[f] for f in FIELDS}, rel


def test_selection_matches_the_published_agg_results_sh(tmp_path):
    """The same val/test series in mmcv .log.json files through the published agg-results.sh (needs jq and
    bc) and through fdsl's published selection: the same test value for every run, including runs whose
    best val is an early evaluation that the string comparison lets in."""
    import random
    import shutil

    if not (shutil.which("jq") and shutil.which("bc")):
        pytest.skip("agg-results.sh needs jq and bc")
    (tmp_path / "utils").mkdir()
    shutil.copy(_published("utils", "agg-results.sh"), tmp_path / "utils")  # run in place, never committed
    work = tmp_path / "OpenSelfSup" / "work_dirs" / "hpt-pretrain" / "toy"
    rng = random.Random(0)
    runs = {}
    for k, (folder, n) in enumerate([("linear-eval/no_basetrain/5000-iters-linear-eval-lr-s{}", 50)] * 4
                                     + [("finetune/1000-labels/no_basetrain/50-iters-2500-iter-0_01-lr-finetune{}",
                                         400)] * 2):
        val = [round(rng.uniform(10, 60), 2) for _ in range(n)]
        if k % 2 == 0:
            val[rng.choice([3, 5, 9, 40 if n == 400 else 7])] = 99.0  # an early peak the string order admits
        test = [round(rng.uniform(10, 60), 2) for _ in range(n)]
        run = folder.format(k)
        runs[f"toy/{run}/20240101_000000.log.json"] = (val, test)
        (work / run).mkdir(parents=True)
        lines = [json.dumps({"mode": "val", "iter": i, f"{split}-head0_top1": series[i]})
                 for i in range(n) for split, series in (("val", val), ("test", test))]
        (work / run / "20240101_000000.log.json").write_text("\n".join(lines) + "\n")
    # its exit status is that of its last `(( i++ % 200 == 0 )) && wait`: 1 whatever happened
    done = subprocess.run(["bash", str(tmp_path / "utils" / "agg-results.sh")], capture_output=True, text=True,
                          check=False, cwd=tmp_path)
    published = dict(line.split(" ::: ") for line in done.stdout.splitlines() if " ::: " in line)
    assert set(published) == set(runs)
    early = 0
    for name, (val, test) in runs.items():
        index, _, value = records.best_val_test(val, test)
        assert float(published[name]) == value, name
        early += index < len(val) // 2
    assert early >= 3  # the early peaks were chosen by both
