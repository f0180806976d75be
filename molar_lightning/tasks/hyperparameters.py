"""What a task records as its hyper-parameters: its arguments, with the injected parts as their configs.

Under the CLI (and ``Task.load_from_checkpoint``), Lightning's instantiator hands ``save_hyperparameters``
the configs of the parts a task is given (``class_path`` + ``init_args``), so a checkpoint alone rebuilds
its model. A task built in Python is given the objects themselves; those are left out, since their weights
are in the state dict and a pickled object would make the checkpoint unloadable with ``weights_only=True``.
Pass them again to ``load_from_checkpoint``, or build the task from a config with
``lightning.pytorch.cli.instantiate_module(Task, config)`` to have them recorded.
"""

import inspect
from typing import Sequence

from lightning.pytorch import LightningModule

# What a recorded hyper-parameter may hold: values and configs, never objects.
PLAIN_VALUES = (str, int, float, bool, type(None), list, tuple, dict)


def record_hyperparameters(task: LightningModule, ignore: Sequence[str] = ()) -> None:
    """``task.save_hyperparameters(ignore=...)`` from the caller's ``__init__``, without injected objects.

    The objects are left out before Lightning copies the hyper-parameters (``hparams_initial`` is a deep
    copy: a second MIRM and DUEG at real size). Built by an instantiator (the CLI, ``load_from_checkpoint``),
    which Lightning marks with ``_instantiator``, the same arguments arrive as configs and are recorded."""
    frame = inspect.currentframe().f_back
    arguments = inspect.getargvalues(frame)
    objects = [name for name in arguments.args[1:] if not isinstance(arguments.locals[name], PLAIN_VALUES)]
    task.save_hyperparameters(ignore=[*ignore, *objects], frame=frame)
    if "_instantiator" in task.hparams:
        task.save_hyperparameters(ignore=list(ignore), frame=frame)
