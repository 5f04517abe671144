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
# # Which samples pull together, which pull apart
#
# Cosine-similarity matrices and t-SNE of gradient directions, at the sample and the batch level, epoch by epoch — with the statistics that say what the pictures show and the recordings behind the conflicts.

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
