"""A tiny backbone and a loop context for the MoCo and BYOL tests."""
import torch
from torch import nn

from fdsl.engine.distributed import DistInfo
from fdsl.engine.loop import LoopContext


class TinyNet(nn.Module):
    """conv-BN-ReLU-pool: a backbone with BatchNorm whose statistics matter, in milliseconds."""

    num_features = 8

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return self.conv2(torch.relu(self.bn1(self.conv1(x)))).mean((2, 3))


def ctx():
    return LoopContext(info=DistInfo())
