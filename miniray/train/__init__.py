"""miniray.train: data-parallel PyTorch training on worker actors, with Ray Train's API.

::

    import miniray.train as train
    from miniray.train.torch import TorchTrainer, prepare_model

    def loop(config):
        model = prepare_model(make_model())
        ...
        train.report({"loss": loss}, checkpoint=train.Checkpoint.from_directory(d))

    result = TorchTrainer(loop, scaling_config=train.ScalingConfig(num_workers=2)).fit()

Importing this package does not import torch; :mod:`miniray.train.torch`
loads it when its helpers run.
"""

from ._backend import Backend, BackendConfig
from ._callback import TrainRunContext, UserCallback
from ._checkpoint import Checkpoint
from ._config import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ._data import DatasetShard
from ._result import ControllerError, Result, TrainingFailedError, WorkerGroupError
from ._report_config import (CheckpointConsistencyMode, CheckpointUploadMode,
                             ReportedCheckpoint, ReportedCheckpointStatus)
from ._session import (TrainContext, get_all_reported_checkpoints, get_checkpoint, get_context,
                       get_dataset_shard, report)
from ._trainer import DataParallelTrainer
from ._validation import ValidationConfig, ValidationFn, ValidationTaskConfig
from ._tune import as_trainable

# Ray's key of the training dataset in ``datasets={...}``.
TRAIN_DATASET_KEY = "train"

__all__ = [
    "Backend", "BackendConfig", "TRAIN_DATASET_KEY", "Checkpoint", "CheckpointConfig", "CheckpointConsistencyMode",
    "CheckpointUploadMode", "ControllerError", "DataParallelTrainer", "DatasetShard",
    "FailureConfig", "LoggingConfig", "ReportedCheckpoint", "ReportedCheckpointStatus", "Result", "RunConfig",
    "ScalingConfig", "SyncConfig", "TrainContext", "TrainRunContext", "TrainingFailedError",
    "UserCallback", "ValidationConfig", "ValidationFn", "ValidationTaskConfig",
    "WorkerGroupError", "as_trainable", "get_all_reported_checkpoints",
    "get_checkpoint", "get_context", "get_dataset_shard", "report",
]


def __getattr__(name):
    # Ray's train.SyncConfig is Tune's class; imported on use, so that miniray.train
    # does not import miniray.tune.
    if name == "SyncConfig":
        from ..tune.config import SyncConfig

        return SyncConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
