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
# # The gradient noise scale across training
#
# How consistent are batch gradients across training? From exact per-sample gradients at every checkpoint we compute the gradient noise scale, the simple critical batch size and their confidence intervals.

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
