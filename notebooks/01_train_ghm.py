# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python (gradkit)
#     language: python
#     name: gradkit
# ---

# %% [markdown]
# # Training with and without the Gradient Harmonizing Mechanism
#
# Does a GHM loss help against the easy/hard-sample imbalance? We train the same ResNetAudioRanker from the same seed, split and initial weights twice on the plastic / 3000 Hz recordings: once with cross-entropy + ranking, once with GHM-C + GHM ranking, and compare.

# %%
# Set-up: every path resolves from the project root, so this runs from any working directory.
import matplotlib.pyplot as plt
import torch

import gradkit
from gradkit.device import pick_device
from gradkit.paths import figures_dir

torch.manual_seed(0)
device = pick_device()
print(f"gradkit {gradkit.__version__}, torch {torch.__version__}, device {device}")
print(f"figures go to {figures_dir()}")
