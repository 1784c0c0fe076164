"""miniray.tune: hyperparameter search with Ray Tune's API, on miniray.

Trials run as tasks on the embedded node; ``tune.report`` streams results back
to the controller through a small hub actor. Optuna (``OptunaSearch``, pruners,
``miniray.tune.integration.optuna``), matplotlib (``ResultGrid.plot``) and
pandas (DataFrames) are imported only when used.

Example::

    from miniray import tune

    def train(config):
        for step in range(10):
            tune.report({"loss": (config["x"] - 3) ** 2 / (step + 1)})

    results = tune.Tuner(train, param_space={"x": tune.uniform(0, 10)},
                         tune_config=tune.TuneConfig(metric="loss", mode="min",
                                                     num_samples=8)).fit()
    print(results.get_best_result().config)
"""

from .callback import Callback
from .checkpoint import Checkpoint
from .config import (CheckpointConfig, FailureConfig, ResumeConfig, RunConfig, SyncConfig,
                     TuneConfig)
from .errors import TuneError
from .experiment import Experiment, run_experiments
from .progress import CLIReporter, JupyterNotebookReporter, ProgressReporter
from .result import ExperimentAnalysis, Result, ResultGrid
from .search.sample import (choice, grid_search, lograndint, loguniform, qlograndint,
                            qloguniform, qrandint, qrandn, quniform, randint, randn,
                            sample_from, uniform)
from .schedulers import create_scheduler
from .search import create_searcher
from .session import TuneContext, get_checkpoint, get_context, report
from .stopper import Stopper
from .trainable import (PlacementGroupFactory, Trainable, register_trainable, with_parameters,
                        with_resources)
from .tuner import Tuner, run

__all__ = [
    "Callback", "Checkpoint", "Experiment", "run_experiments", "PlacementGroupFactory", "ResumeConfig", "SyncConfig",
    "register_trainable", "TuneContext", "create_scheduler",
    "create_searcher", "CheckpointConfig", "CLIReporter", "JupyterNotebookReporter", "ExperimentAnalysis", "FailureConfig",
    "ProgressReporter", "Result", "ResultGrid", "RunConfig", "Stopper", "Trainable",
    "TuneConfig", "TuneError", "Tuner", "choice", "get_checkpoint", "get_context",
    "grid_search", "lograndint", "loguniform", "qlograndint", "qloguniform", "qrandint",
    "qrandn", "quniform", "randint", "randn", "report", "run", "sample_from", "uniform",
    "with_parameters", "with_resources",
]
