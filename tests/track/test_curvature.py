"""The tracker's optional Hessian top eigenvalue: that of the step's batch loss at the step's
parameters, with the products it took, and the training left as it was."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradkit.grads.hessian import dense_hessian
from gradkit.track import Tracker, load_run


def test_hessian_top_is_the_batch_loss_hessians_largest_eigenvalue(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    twin = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    twin.load_state_dict(model.state_dict())
    opt, twin_opt = (torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, twin))
    tracker = Tracker(model, tmp_path / "run", gram_every=0, loss_fn=F.cross_entropy,
                      hessian_every=2, hessian_iters=40)
    want = {}
    for step in range(3):
        x, y = torch.randn(8, 3, dtype=torch.float64), torch.randint(0, 2, (8,))
        if step % 2 == 0:
            want[step] = float(torch.linalg.eigvalsh(dense_hessian(model, F.cross_entropy, x,
                                                                   y))[-1])
        with tracker.step(labels=y, inputs=x):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
        opt.step()
        twin_opt.zero_grad()
        F.cross_entropy(twin(x), y).backward()
        twin_opt.step()
    tracker.close()
    rows = load_run(tmp_path / "run").scalars.set_index("step")
    for step, value in want.items():
        assert rows.loc[step, "hessian_top"] == pytest.approx(value, rel=1e-4)  # Lanczos tol
        assert 1 <= rows.loc[step, "hessian_hvps"] <= 40
    assert math.isnan(rows.loc[1, "hessian_top"])
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)  # the products changed neither .grad nor the step


def test_hessian_every_needs_the_loss(tmp_path):
    with pytest.raises(ValueError, match="hessian_every needs Tracker\\(loss_fn"):
        Tracker(nn.Linear(3, 2), tmp_path / "run", hessian_every=5)
    with pytest.raises(ValueError, match="hessian_iters must be an integer >= 2"):
        Tracker(nn.Linear(3, 2), tmp_path / "run2", loss_fn=F.cross_entropy, hessian_every=5,
                hessian_iters=1)
