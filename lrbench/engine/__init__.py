"""The torch layer: models and checkpoints, the test pipeline and its post-processing, evaluation, speed, FLOPs, the
claims' measurements, predict and publish. Everything here may import torch; the reading layer below it (the rest of
``lrbench``: names, zoo manifest and sources, recipes, settings, dataset layouts, result files, statistics, report,
claims judging) never does, and nothing there imports from here (``tests/test_layers.py``)."""
