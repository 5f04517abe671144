"""Networks: the workbook's ``ResNetAudioRanker``, a plain CNN, the multi-task networks.

- :mod:`~gradkit.models.resnet`     ``ResNetAudioRanker`` (GroupNorm ResNet, class + score heads)
- :mod:`~gradkit.models.cnn`        ``plain_cnn``: no skip connections (notebook 05)
- :mod:`~gradkit.models.multitask`  ``SharedNet``, ``TwoBackbones`` (notebook 04)
"""

from gradkit.models.cnn import plain_cnn
from gradkit.models.multitask import SharedNet, TwoBackbones
from gradkit.models.resnet import BasicBlock, InputPrompt, ResNetAudioRanker, group_norm

__all__ = ["BasicBlock", "InputPrompt", "ResNetAudioRanker", "SharedNet", "TwoBackbones",
           "group_norm", "plain_cnn"]
