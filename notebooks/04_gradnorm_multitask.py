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
# # GradNorm on a detection + classification network
#
# Does GradNorm balance two tasks that share a backbone without collapsing a task weight? We compare it with fixed weights, uncertainty weighting, PCGrad and two independent backbones, over several seeds.

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
