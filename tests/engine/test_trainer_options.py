"""Optional engine features: EMA, channels-last, recovery checkpoints, --start-epoch, --pretrained offline, GPU AMP."""
import os

import pytest
import torch

from fdsl.cli.main import main
from tests.helpers.runs import TINY_VIT, make_folder, run_cli

COMMON = [*TINY_VIT, "-b", "8", "-j", "0", "--log-interval", "100", "--warmup-epochs", "0"]


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("db"), classes=4, per_class=8)


def test_ema_channels_last_recovery_and_start_epoch(db, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert main(["pretrain", db, *COMMON, "--epochs", "3", "--start-epoch", "1", "--model-ema", "--channels-last",
                 "--recovery-interval", "2", "--checkpoint-hist", "1", "--save-images", "--output", str(tmp_path),
                 "--experiment", "o"]) == 0
    run = tmp_path / "o"
    ckpt = torch.load(run / "last.pth.tar", weights_only=True)
    assert ckpt["epoch"] == 2 and "state_dict_ema" in ckpt
    assert len([f for f in os.listdir(run) if f.startswith("checkpoint-")]) == 1  # --checkpoint-hist 1
    assert len([f for f in os.listdir(run) if f.startswith("recovery-")]) == 2  # the two newest are kept
    assert not any(f.endswith(".tmp") or ".tmp" in f for f in os.listdir(run))
    assert "train-batch-0.jpg" in os.listdir(run)


def test_pretrained_without_cached_weights_is_one_clear_line(db, tmp_path):
    proc = run_cli("pretrain", db, *COMMON, "--pretrained", "--epochs", "1", "--output", tmp_path, check=False,
                   env={"HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "th")})
    assert proc.returncode == 2 and "local cache" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cuda_amp(db, tmp_path, dtype, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert main(["pretrain", db, *COMMON, "--epochs", "1", "--amp", "--amp-dtype", dtype, "--device", "cuda",
                 "--output", str(tmp_path), "--experiment", dtype]) == 0
    ckpt = torch.load(tmp_path / dtype / "last.pth.tar", weights_only=True)
    assert ("amp_scaler" in ckpt) == (dtype == "float16")
