"""How image folders are read everywhere: which files are images, and the class order."""
from __future__ import annotations

import re

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def natural_key(text: str):
    """Sort key where a digit run compares as a number: class2 < class10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]
