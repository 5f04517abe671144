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
# # Optimisation notes, computed live
#
# Critical points and the Hessian, batch size, momentum, AdaGrad / RMSProp / Adam, learning-rate schedules, softmax + cross-entropy, Hoeffding's bound and batch normalisation — each claim of the lecture notes checked on real tensors.

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
