"""`fdsl evaluate`: the same figures as fine-tuning's own validation, per class, for checkpoints and exports."""
import csv
import json
import shutil

import pytest
from PIL import Image

from tests.helpers.tiny_models import VIT_FLAGS, named_folder

TRAIN = ["--mean", "0.5", "0.4", "0.3", "--std", "0.2", "0.25", "0.3", "--crop-pct", "0.8", "--lr", "0.05",
         "--warmup-epochs", "0", "--epochs", "2", "-b", "8", "-j", "0", "--device", "cpu", "--cache-images", "off"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-epoch fine-tuning run (validated every epoch on val/) and the export of its last checkpoint."""
    from fdsl.cli.main import main

    root = tmp_path_factory.mktemp("evaluate")
    data = named_folder(root / "data", per_class=6)
    assert main(["finetune", data, *VIT_FLAGS, *TRAIN, "--output", str(root), "--experiment", "ft"]) == 0
    assert main(["export", str(root / "ft" / "last.pth.tar"), "--out", str(root / "exported")]) == 0
    with open(root / "ft" / "summary.csv") as f:
        last = list(csv.DictReader(f))[-1]
    return {"root": root, "data": data, "ckpt": root / "ft" / "last.pth.tar", "summary": last}


def evaluate(fdsl_cli, ckpt, data, out, *extra):
    code, stdout, err = fdsl_cli("evaluate", ckpt, "--data", data, "-j", "0", "--out", out, *extra)
    assert code == 0, err
    return json.loads((out / "results.json").read_text()), stdout


def test_figures_match_finetunings_own_validation(run, tmp_path, fdsl_cli, one_thread):
    result, stdout = evaluate(fdsl_cli, run["ckpt"], run["data"], tmp_path / "ev")
    assert result["images"] == 24 and result["data"].endswith("val")
    assert result["top1"] == pytest.approx(float(run["summary"]["eval_top1"]))
    assert result["loss"] == pytest.approx(float(run["summary"]["eval_loss"]), rel=1e-5)
    assert result["data_config"]["mean"] == pytest.approx([0.5, 0.4, 0.3]) and result["data_config"]["crop_pct"] == 0.8
    assert "top5" not in result  # 4 classes, as fine-tuning's evaluation reports
    assert f"top1 {result['top1']:.2f}" in stdout


def test_per_class_accuracy_and_confusion_agree(run, tmp_path, fdsl_cli):
    result, _ = evaluate(fdsl_cli, run["ckpt"], run["data"], tmp_path / "ev")
    matrix, classes = result["confusion"]["matrix"], result["confusion"]["classes"]
    assert classes == ["cat", "dog", "eel", "fox"] and sum(map(sum, matrix)) == 24
    for i, name in enumerate(classes):
        assert result["per_class"][name] == {"images": 6, "top1": pytest.approx(100 * matrix[i][i] / 6)}
    assert result["top1"] == pytest.approx(100 * sum(matrix[i][i] for i in range(4)) / 24)
    with Image.open(tmp_path / "ev" / "confusion.png") as png:
        assert png.format == "PNG" and png.size[0] > 100


def test_an_exported_folder_scores_the_same(run, tmp_path, fdsl_cli):
    ours, _ = evaluate(fdsl_cli, run["ckpt"], run["data"], tmp_path / "a")
    exported, _ = evaluate(fdsl_cli, run["root"] / "exported", run["data"], tmp_path / "b")
    assert exported["layout"] == "timm-hf" and exported["data_config"] == ours["data_config"]
    assert (exported["top1"], exported["per_class"]) == (ours["top1"], ours["per_class"])
    assert exported["loss"] == pytest.approx(ours["loss"], rel=1e-6)


def test_a_subset_folder_is_matched_by_label_name(run, tmp_path, fdsl_cli):
    full, _ = evaluate(fdsl_cli, run["ckpt"], run["data"], tmp_path / "full")
    for name in ("fox", "cat"):  # two of the four classes: indices would shift if matched by order
        shutil.copytree(f"{run['data']}/val/{name}", tmp_path / "subset" / name)
    part, _ = evaluate(fdsl_cli, run["ckpt"], tmp_path / "subset", tmp_path / "part", "--split", "")
    assert part["images"] == 12 and part["per_class"] == {n: full["per_class"][n] for n in ("cat", "fox")}


def test_bad_input_is_one_line(run, tmp_path, fdsl_cli):
    named_folder(tmp_path / "other", names=("cat", "yak"), splits=("",))
    for argv, message in (
            ([run["ckpt"], "--data", tmp_path / "other"], "classes the model does not know: yak"),
            ([run["ckpt"], "--data", tmp_path / "nowhere"], "does not exist"),
            ([tmp_path / "nothing.pth", "--data", run["data"]], "does not exist")):
        code, _, err = fdsl_cli("evaluate", *argv, "--out", tmp_path / "x")
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
