"""The engine's rules, one file per layer type (BackPACK / Opacus style): a layer type's file
holds its forms beyond the materialised rule, which is still in :mod:`gradkit.grads.layers` /
:mod:`gradkit.grads.convs` for now.

- :mod:`~gradkit.grads.rules.linear`  ``nn.Linear``: Gram (ghost), norms, Kronecker sketch
- :mod:`~gradkit.grads.rules.conv`    convolutions as Linear layers on unfolded patches
"""
