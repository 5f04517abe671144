"""The optimisation lecture notes (notebook 05), computed on real tensors, one module per topic.

- :mod:`~gradkit.lectures.diagnosis`        model bias, optimisation or overfitting?
- :mod:`~gradkit.lectures.critical_points`  find a critical point, tell its kind
- :mod:`~gradkit.lectures.minibatch`        mini-batch gradient noise against the 1/B law
- :mod:`~gradkit.lectures.optimizers`       momentum, AdaGrad, RMSProp, Adam; schedules
- :mod:`~gradkit.lectures.softmax`          softmax, MSE vs cross-entropy gradients
- :mod:`~gradkit.lectures.feature_norm`     feature scales, the loss surface and its condition
- :mod:`~gradkit.lectures.hoeffding`        when is a training set bad?
- :mod:`~gradkit.lectures.batchnorm`        BatchNorm's statistics and running averages
"""
