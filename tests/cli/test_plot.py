"""`fdsl plot RUN_DIR` draws summary.csv curves to a PNG."""
from PIL import Image

from fdsl.cli.main import main


def test_plot_writes_a_png(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.csv").write_text("epoch,train_loss,eval_loss,eval_top1,eval_top5\n0,2.0,1.9,40,80\n1,1.5,1.4,60,90\n")
    assert main(["plot", str(run)]) == 0
    assert Image.open(run / "curves.png").size[0] > 500


def test_plot_of_a_missing_run_is_one_line(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_plot_skips_untested_epochs(tmp_path):
    from fdsl.cli.plot import series

    rows = [{"epoch": "0", "train_loss": "2.0", "eval_top1": ""}, {"epoch": "1", "train_loss": "1.5", "eval_top1": "60"}]
    assert series(rows, "eval_top1") == ([1], [60.0]) and series(rows, "train_loss") == ([0, 1], [2.0, 1.5])
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.csv").write_text("epoch,train_loss,eval_loss,eval_top1,eval_top5\n0,2.0,,,\n1,1.5,1.4,60,90\n")
    assert main(["plot", str(run)]) == 0
    assert (run / "curves.png").stat().st_size > 5000
