"""Every command in the README's bash blocks is exercised: fdsl and training command lines parse with fdsl's own
parsers (their --config recipes loaded), exe_scripts run with DRY_RUN=1, the other scripts exist. `make demo`
and `make test` are run by CI itself."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.helpers import REPO


def readme_commands() -> list[str]:
    """Logical lines (backslash continuations joined, comments dropped) of the README's ```bash blocks."""
    with open(os.path.join(REPO, "README.md")) as f:
        blocks = re.findall(r"```bash\n(.*?)```", f.read(), flags=re.DOTALL)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def split(command: str) -> tuple[dict, list[str]]:
    """(leading VAR=value assignments, argv)."""
    words = shlex.split(command)
    env = {}
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    return env, words


def check_training(kind: str, argv: list[str]) -> None:
    from fdsl.cli import args as cli_args
    from fdsl.cli import hydra

    argv = [a for a in argv if a != "..."]
    cwd = os.getcwd()
    os.chdir(REPO)  # configs/... are relative to the checkout in the README
    try:
        if hydra.is_hydra(argv):
            hydra.to_args(argv)
        else:
            cli_args.parse(kind, argv)
    finally:
        os.chdir(cwd)


def check(command: str, tmp_path) -> None:
    env, argv = split(command)
    if argv[:2] in (["make", "demo"], ["make", "test"]):
        return
    if argv[0] == "make":  # another target: it exists in the Makefile
        with open(os.path.join(REPO, "Makefile")) as f:
            assert argv[1] in re.findall(r"^([\w-]+):", f.read(), flags=re.MULTILINE), command
        return
    if "fdsl" in argv:  # fdsl ..., python -m fdsl ..., mpirun ... fdsl ..., torchrun ... -m fdsl ...
        argv = argv[argv.index("fdsl") + 1:]
        if argv[0] == "render":
            from fdsl.cli.render import build_parser
            from fdsl.data import registry

            build_parser(registry.get(argv[1])).parse_args([a for a in argv[2:] if a != "..."])
        elif argv[0] in ("pretrain", "finetune"):
            check_training(argv[0], argv[1:])
        else:  # preview, plot, deepercluster, ...: run by make demo and their own tests
            from fdsl.cli.main import COMMANDS

            assert argv[0] in COMMANDS, command
        return
    script = next((a for a in argv if a.endswith((".py", ".sh"))), None)
    assert script, f"README command not recognised: {command}"
    if script in ("pretrain.py", "finetune.py"):
        check_training(script[:-3], argv[argv.index(script) + 1:])
    elif script.startswith("exe_scripts/exe_") and script.endswith(".sh"):
        proc = subprocess.run(["bash", os.path.join(REPO, script), *argv[argv.index(script) + 1:]], cwd=tmp_path,
                              env={**os.environ, **env, "DRY_RUN": "1", "PYTHON": sys.executable},
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0 and "pretrain.py" in proc.stdout, (command, proc.stderr)
    else:  # the demo and effect scripts (run by make demo and tests/exe_scripts/), bench, scripts/
        assert os.path.isfile(os.path.join(REPO, script)), f"{script} (in the README) does not exist"
        if script.endswith(".sh"):
            subprocess.run(["bash", "-n", os.path.join(REPO, script)], check=True)


def test_readme_has_commands():
    assert len(readme_commands()) > 20


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command(command, tmp_path):
    check(command, tmp_path)
