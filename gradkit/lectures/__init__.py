"""The optimisation lecture notes (notebook 05), computed on real tensors, one module per topic.

- :mod:`~gradkit.lectures.diagnosis`        model bias, optimisation or overfitting?
- :mod:`~gradkit.lectures.critical_points`  find a critical point, tell its kind
- :mod:`~gradkit.lectures.spectrum`         a real model's Hessian spectrum by HVPs only
- :mod:`~gradkit.lectures.minibatch`        mini-batch gradient noise against the 1/B law
- :mod:`~gradkit.lectures.optimizers`       momentum, AdaGrad, RMSProp, Adam; schedules
- :mod:`~gradkit.lectures.against_torch`    those rules and schedules against ``torch.optim``
- :mod:`~gradkit.lectures.softmax`          softmax, MSE vs cross-entropy gradients
- :mod:`~gradkit.lectures.feature_norm`     feature scales, the loss surface and its condition
- :mod:`~gradkit.lectures.hoeffding`        when is a training set bad?
- :mod:`~gradkit.lectures.batchnorm`        BatchNorm's statistics and running averages

Each demonstration of the notebook is one call here, returning a table or the numbers behind a
figure; the notebook shows it and writes its sentence from those numbers. Example::

    >>> from gradkit.lectures import rules_against_torch, saddle_valley_grad
    >>> from gradkit.lectures import SADDLE_VALLEY_START
    >>> table = rules_against_torch({"2-D": (saddle_valley_grad, SADDLE_VALLEY_START, 20)},
    ...                             lr=0.02)
    >>> float(table["max |ours − torch.optim|"].max()) < 1e-12
    True
"""

from gradkit.lectures.against_torch import (
    rules_against_torch,
    torch_optimizer,
    torch_warmup_cosine,
    variants_against_torch,
)
from gradkit.lectures.batchnorm import (
    RunningStatsCheck,
    moving_average,
    output_spread,
    running_stats_against_torch,
    training_stream,
)
from gradkit.lectures.critical_points import (
    classify_critical_point,
    critical_point_table,
    find_critical_point,
    loss_along,
)
from gradkit.lectures.diagnosis import (
    converged_stop,
    convergence,
    diagnose,
    diagnose_converged,
    mean_interval,
    per_clip_loss,
    train_until_converged,
    training_trend,
)
from gradkit.lectures.feature_norm import condition_number, standardise, surface_around_optimum
from gradkit.lectures.hoeffding import bound_table, hoeffding_bound, simulate_bad_training_sets
from gradkit.lectures.minibatch import at_equal_updates, expected_minibatch_noise, noise_table
from gradkit.lectures.optimizers import (
    RULES,
    SADDLE_VALLEY_START,
    adagrad,
    adam,
    gradient_descent,
    momentum,
    rmsprop,
    root_mean_square,
    run_rule,
    run_rules,
    saddle_valley,
    saddle_valley_grad,
    steps_to,
    torch_path,
    warmup_cosine,
    warmup_cosine_schedule,
)
from gradkit.lectures.softmax import (
    gradients_against_autograd,
    margin_sweep,
    saturated_start_curves,
)
from gradkit.lectures.spectrum import HessianSummary, hessian_summary, lanczos_against_dense

__all__ = [
    "RULES", "SADDLE_VALLEY_START", "HessianSummary", "RunningStatsCheck", "adagrad", "adam",
    "at_equal_updates", "expected_minibatch_noise", "gradient_descent", "momentum", "rmsprop",
    "root_mean_square",
    "bound_table", "classify_critical_point", "condition_number", "critical_point_table",
    "convergence", "converged_stop", "diagnose", "diagnose_converged", "mean_interval",
    "per_clip_loss", "train_until_converged",
    "find_critical_point", "gradients_against_autograd", "hessian_summary",
    "hoeffding_bound", "lanczos_against_dense", "loss_along", "margin_sweep", "moving_average",
    "noise_table", "output_spread", "rules_against_torch", "run_rule", "run_rules",
    "running_stats_against_torch", "saddle_valley", "saddle_valley_grad",
    "saturated_start_curves", "simulate_bad_training_sets", "standardise", "steps_to",
    "surface_around_optimum", "torch_optimizer", "torch_path", "torch_warmup_cosine",
    "training_stream", "training_trend", "variants_against_torch", "warmup_cosine",
    "warmup_cosine_schedule",
]
