"""Configurations that cannot work, refused before any process starts or any data is prepared.

Each check reads the merged configuration as given (:func:`molar_lightning.config_keys.given_config`) and
returns one message that says what to change, or None. Until now these failed minutes later: an FSDP mesh
that does not match the processes inside Lightning's launch, an end-to-end Molar without item contents at
``setup``, an ID-only task under FSDP when loading its first sharded checkpoint, a logger whose package is not
installed (with a traceback from inside jsonargparse).
"""

import importlib.util
import os
from typing import Any, Optional

import torch

MODEL_PARALLEL = "ModelParallelStrategy"
ITEM_INPUTS = "ItemInputsCallback"
# The package each logger of configs/logger/ imports, and what installs it.
LOGGER_PACKAGES = {"MLFlowLogger": ("mlflow", "mlflow-skinny"), "WandbLogger": ("wandb", "wandb")}


def short_name(node: Any) -> str:
    """The class name a config node (``{class_path: ...}`` or a plain string) names, or ""."""
    class_path = node.get("class_path", "") if isinstance(node, dict) else node if isinstance(node, str) else ""
    return str(class_path).rpartition(".")[2]


def process_count(trainer: dict) -> Optional[int]:
    """Processes the trainer section asks for (devices x num_nodes); None when only the launch can tell."""
    devices = trainer.get("devices", "auto")
    if isinstance(devices, list):
        count = len(devices)
    elif isinstance(devices, int) and devices > 0:
        count = devices
    elif str(trainer.get("accelerator", "auto")) in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        count = torch.cuda.device_count()  # devices: -1 or auto
    else:
        return None
    return count * int(trainer.get("num_nodes", 1))


def has_language_model(model: dict) -> bool:
    """Whether the configured task holds a part that FSDP shards (an LLM user encoder or a MIRM)."""
    init_args = model.get("init_args") or {}
    parts = [init_args.get(name) for name in ("encoder", "item_encoder", "user_encoder")]
    return any(short_name(part) in ("MultimodalItemEncoder", "LLMUserEncoder") for part in parts)


def sharding_problem(config: dict) -> Optional[str]:
    """ModelParallelStrategy asked for with a mesh that does not fit the processes, or for a task without LLMs."""
    trainer = config.get("trainer") or {}
    strategy = trainer.get("strategy")
    if short_name(strategy) != MODEL_PARALLEL:
        return None
    sizes = (strategy.get("init_args") or {}) if isinstance(strategy, dict) else {}
    data_parallel, tensor_parallel = sizes.get("data_parallel_size", "auto"), sizes.get("tensor_parallel_size", "auto")
    processes = process_count(trainer)
    fix = (f"set trainer.strategy.init_args.data_parallel_size: {processes or '<devices x num_nodes>'} and "
           f"tensor_parallel_size: 1 (configs/trainer/fsdp.yaml)")
    if tensor_parallel != 1 or data_parallel == "auto":
        return f"molar shards data-parallel only (FSDP2), so the mesh must be every process by 1: {fix}"
    if processes is not None and data_parallel != processes:
        return (f"ModelParallelStrategy's data_parallel_size is {data_parallel} but the trainer starts {processes} "
                f"process(es) (devices x num_nodes): {fix}, or change trainer.devices / trainer.num_nodes")
    model = config.get("model") or {}
    if isinstance(model, dict) and not has_language_model(model):
        return (f"FSDP shards the language models of a task (MIRM, DUEG), and {short_name(model) or 'this model'} "
                f"holds none here: use configs/trainer/ddp.yaml")
    return None


def item_inputs_problem(config: dict) -> Optional[str]:
    """End-to-end Molar (an ``item_encoder``) without the callback that gives it the items' contents."""
    model = config.get("model") or {}
    init_args = (model.get("init_args") or {}) if isinstance(model, dict) else {}
    if short_name(model) != "MolarModule" or not init_args.get("item_encoder"):
        return None
    callbacks = (config.get("trainer") or {}).get("callbacks") or []
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
    if any(short_name(callback) == ITEM_INPUTS for callback in callbacks):
        return None
    return ("end-to-end Molar (model.init_args.item_encoder set) needs the items' contents: add "
            "{class_path: molar_lightning.callbacks.item_inputs.ItemInputsCallback} to trainer.callbacks, or use "
            "the cached mode (item_embeddings: <folder printed by molar embed>, item_encoder: null)")


def mlflow_store_problem(init_args: dict) -> Optional[str]:
    """An MLflow store LightningCLI cannot use: a remote one (its SaveConfigCallback writes config.yaml into
    the logger's local folder, which only a file store has: Lightning issue #19441), or the file store while
    MLflow 3 refuses it unless ``MLFLOW_ALLOW_FILE_STORE`` is set."""
    tracking_uri = init_args.get("tracking_uri", os.environ.get("MLFLOW_TRACKING_URI")) or ""  # as MLFlowLogger
    if tracking_uri and not tracking_uri.startswith("file:"):
        return (f"MLFlowLogger's tracking_uri {tracking_uri} has no local folder, where molar writes the run's "
                f"config.yaml and results: leave it null for the file store in the run folder "
                f"(configs/logger/mlflow.yaml)")
    try:
        from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE
    except ImportError:  # an MLflow that takes its file store unasked
        return None
    if not MLFLOW_ALLOW_FILE_STORE.get():
        return ("MLflow 3 refuses its file store, the store LightningCLI needs (a local folder), unless asked: "
                "export MLFLOW_ALLOW_FILE_STORE=true, or log with configs/logger/tensorboard.yaml")
    return None


def logger_problem(config: dict) -> Optional[str]:
    """A logger (``trainer.logger``, one or a list) whose package is not installed, or an MLflow store that
    cannot be used."""
    loggers = (config.get("trainer") or {}).get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        name = short_name(logger)
        module, package = LOGGER_PACKAGES.get(name, (None, None))
        if module is not None and importlib.util.find_spec(module) is None:
            return (f"trainer.logger {name} needs the {module} package, which is not installed: pip install "
                    f"{package}, or log with configs/logger/tensorboard.yaml or configs/logger/csv.yaml")
        if name == "MLFlowLogger":
            problem = mlflow_store_problem((logger.get("init_args") or {}) if isinstance(logger, dict) else {})
            if problem:
                return problem
    return None


def launch_problem(config: dict) -> Optional[str]:
    """The first configuration that cannot work, as one message, or None."""
    return sharding_problem(config) or item_inputs_problem(config) or logger_problem(config)
