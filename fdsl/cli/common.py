"""Shared pieces of the command-line front ends."""
from __future__ import annotations

import argparse

from fdsl.errors import UserError


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (raised as UserError, printed by fdsl.cli.main)."""

    def error(self, message: str):
        raise UserError(f"{message} (see {self.prog} --help)")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass
