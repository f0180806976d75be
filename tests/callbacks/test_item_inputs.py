"""The MIRM inputs' data side holds no model: the training collate ``ItemInputsCallback`` installs, its catalog
loader and ``molar embed``'s item loader pickle without a single ``torch.nn.Module`` or ``Parameter`` and at a
fraction of the model's weights (their builder is the encoder's weights-free ``prompts``), as does stage-1
alignment's loader (the backbone's processor), and a DataLoader worker started with ``spawn`` holds no weights
either and builds the very batches the main process builds."""

import dataclasses
import gc
import io
import pickle
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from molar_lightning.callbacks.item_embedding_cache import extract_item_embeddings
from molar_lightning.callbacks.item_inputs import ItemInputsCallback
from molar_lightning.data.alignment import MIRMAlignmentDataModule
from molar_lightning.data.catalog import ItemCatalog
from molar_lightning.data.datamodule import MovieLensDataModule
from molar_lightning.data.item_inputs import ItemContentDataset, StepItemsCollate
from molar_lightning.data.sources.movielens import MovieLens
from molar_lightning.data.synthetic import write_movielens
from molar_lightning.models.mirm import MultimodalItemEncoder
from molar_lightning.models.tiny import tiny_qwen2_vl_config, tiny_text_config
from molar_lightning.tasks.mirm_alignment import MIRMAlignmentModule
from tests.models.conftest import (  # noqa: F401 - fixtures
    IMAGE_SIZE,
    add_posters_and_plots,
    qwen_tokenizer_dir,
    tiny_qwen2_dir,
    tiny_qwen2_vl_dir,
)

REPO = Path(__file__).parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "movielens" / "ml-1m"
# Wider than the other tests' tiny models, whose 32-wide weights are about the size of the tokenizer: 256-wide
# weights (160 MB, most of them the 151,936-row embedding table) are well above what any worker must get.
WIDTH = 256


class ModelSpotter(pickle.Pickler):
    """Pickles as ``pickle.dumps`` does, and records every module and parameter it is asked to pickle."""

    def __init__(self, file) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.models: list[str] = []

    def reducer_override(self, obj):
        if isinstance(obj, (nn.Module, nn.Parameter)):
            self.models.append(type(obj).__name__)
        return NotImplemented  # pickle it the usual way


def pickled(obj) -> tuple[int, list[str]]:
    """Bytes of ``obj`` pickled, and the modules and parameters among them."""
    buffer = io.BytesIO()
    spotter = ModelSpotter(buffer)
    spotter.dump(obj)
    return buffer.tell(), spotter.models


def weight_bytes(module: nn.Module) -> int:
    """Bytes of the state dict's tensors, each storage once (tied embeddings are one matrix)."""
    storages = {tensor.untyped_storage().data_ptr(): tensor.untyped_storage().nbytes()
                for tensor in module.state_dict().values()}
    return sum(storages.values())


def assert_holds_no_model(obj, encoder: MultimodalItemEncoder) -> None:
    size, models = pickled(obj)
    assert models == [], f"{type(obj).__name__} pickles {len(models)} modules/parameters: {sorted(set(models))}"
    tokenizer, _ = pickled(encoder.processor.tokenizer)
    # What a worker gets is the tokenizer (vocabulary and merges) and little else, a fraction of the weights.
    assert size < tokenizer + 1_000_000 and size < weight_bytes(encoder) / 5, (size, tokenizer, weight_bytes(encoder))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> MovieLensDataModule:
    folder = tmp_path_factory.mktemp("synthetic")
    write_movielens(str(folder / "raw"), num_users=30, num_items=40, mean_length=8)
    return MovieLensDataModule(str(folder / "raw"), cache_dir=str(folder / "cache"), max_seq_len=6, batch_size=4)


@pytest.fixture(scope="module")
def mirm(tiny_qwen2_dir: Path) -> MultimodalItemEncoder:
    """End-to-end Molar's item encoder: LoRA on a text decoder, packed batches."""
    torch.manual_seed(0)
    return MultimodalItemEncoder(str(tiny_qwen2_dir), dict(model_type="qwen2", **tiny_text_config(WIDTH)),
                                 modality="text", pooling="mean", finetuning="lora", pack_sequences=True)


@pytest.fixture(scope="module")
def wired(data: MovieLensDataModule, mirm: MultimodalItemEncoder) -> dict:
    """What ItemInputsCallback hands an end-to-end MolarModule (``connect_item_inputs``'s arguments); it installs
    the training collate on ``data``."""
    connected = {}
    task = SimpleNamespace(item_encoder=mirm, negatives_per_step=5,
                           connect_item_inputs=lambda *args: connected.update(zip(("items", "num", "catalog"), args)))
    ItemInputsCallback().setup(SimpleNamespace(datamodule=data), task, "fit")
    return connected


def test_the_training_collate_and_the_catalog_loader_hold_no_model(data, mirm, wired: dict) -> None:
    collate = data.train_collate
    assert isinstance(collate, StepItemsCollate)
    assert_holds_no_model(collate, mirm)
    assert collate.items.builder is mirm.prompts
    loader = wired["catalog"](8, tuple(range(1, data.num_items + 1)))  # what evaluation embeds
    assert_holds_no_model(loader.dataset, mirm)
    assert_holds_no_model(loader.collate_fn, mirm)


@pytest.fixture(scope="module")
def posters_dir(tmp_path_factory) -> Path:
    """The ML-1M fixture with posters and plots."""
    folder = tmp_path_factory.mktemp("ml-1m")
    for path in FIXTURE.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    return add_posters_and_plots(folder)


@pytest.fixture(scope="module")
def vl_encoder(tiny_qwen2_vl_dir: Path) -> MultimodalItemEncoder:
    torch.manual_seed(0)
    return MultimodalItemEncoder(str(tiny_qwen2_vl_dir), tiny_qwen2_vl_config(WIDTH), image_size=IMAGE_SIZE)


def test_the_molar_embed_loader_holds_no_model(posters_dir: Path, vl_encoder, tmp_path: Path, monkeypatch) -> None:
    catalog = ItemCatalog(MovieLensDataModule(str(posters_dir), cache_dir=str(tmp_path / "cache")).dataset)
    encoder = vl_encoder
    handed = []

    class Handed(Exception):
        pass

    def predict(trainer, module, dataloaders, return_predictions):
        handed.append(dataloaders)
        raise Handed  # stop here: the loader is what is under test

    monkeypatch.setattr(pl.Trainer, "predict", predict)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         default_root_dir=str(tmp_path))
    with pytest.raises(Handed):
        extract_item_embeddings(trainer, MIRMAlignmentModule(encoder), catalog, cache_root=str(tmp_path / "items"))
    (loader,) = handed
    assert isinstance(loader.dataset, ItemContentDataset)
    assert_holds_no_model(loader.dataset, encoder)
    assert_holds_no_model(loader.collate_fn, encoder)
    assert loader.dataset.builder is encoder.prompts
    assert sum(len(batch.item_ids) for batch in loader) == len(catalog)
    assert any(batch.image_inputs for batch in loader)  # the images are the worker's business too


def test_the_alignment_loader_holds_the_backbones_processor_not_the_model(posters_dir: Path, vl_encoder,
                                                                          tmp_path: Path) -> None:
    data = MIRMAlignmentDataModule(source=MovieLens(str(posters_dir)), cache_dir=str(tmp_path / "cache"),
                                   examples_per_mixture=4, batch_size=2)
    with pytest.raises(TypeError, match=r"encoder\.processor"):
        data.connect(vl_encoder)
    data.connect(vl_encoder.processor, vl_encoder.item_token_id)  # as MIRMAlignmentModule.setup does
    loader = data.train_dataloader()
    assert_holds_no_model(loader.dataset, vl_encoder)
    assert_holds_no_model(loader.collate_fn, vl_encoder)


def seed_a_worker_that_holds_no_model(worker_id: int) -> None:
    """``worker_init_fn``: fail in a worker that holds any parameter or module with parameters (it has unpickled
    the data set and the collate by now), else seed it as the main process is seeded. (Importing
    ``transformers`` makes a few activation modules, without parameters.)"""
    objects = gc.get_objects()
    weights = sum(issubclass(type(obj), nn.Parameter) for obj in objects)
    models = {type(obj).__name__ for obj in objects if issubclass(type(obj), nn.Module) and obj._parameters}
    if weights or models:
        raise AssertionError(f"a DataLoader worker holds {weights} parameters, in {sorted(models)}")
    torch.manual_seed(worker_id)


def fields(value, prefix: str = "batch") -> dict:
    """A batch's tensors (and Nones) by dotted name, nested batches and image dicts included."""
    if dataclasses.is_dataclass(value):
        value = {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    if not isinstance(value, dict):
        return {prefix: value}
    return {name: leaf for key, item in value.items() for name, leaf in fields(item, f"{prefix}.{key}").items()}


def test_a_spawned_worker_builds_the_training_batches_the_main_process_builds(data, wired: dict, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(REPO))  # so that the spawned worker can import its worker_init_fn from here
    windows = data.train_dataloader().dataset

    def first_batches(workers: int) -> list:
        loader = DataLoader(windows, batch_size=4, collate_fn=data.train_collate, num_workers=workers,
                            multiprocessing_context="spawn" if workers else None,
                            worker_init_fn=seed_a_worker_that_holds_no_model)
        iterator = iter(loader)
        if not workers:
            torch.manual_seed(0)  # the random negatives, drawn as the worker draws them
        return [fields(next(iterator)) for _ in range(3)]

    in_main, in_worker = first_batches(0), first_batches(1)
    for main, worker in zip(in_main, in_worker):
        assert main.keys() == worker.keys()
        for name, value in main.items():
            same = torch.equal(value, worker[name]) if isinstance(value, torch.Tensor) else value == worker[name]
            assert same, name
    step_items = [batch["batch.step_items.item_ids"] for batch in in_main]
    assert in_main[0]["batch.step_items.attention_mask"] is None  # packed, as the encoder asks
    assert len({tuple(ids.tolist()) for ids in step_items}) == 3
    assert all(len(ids) < data.num_items for ids in step_items)  # a sample of the catalog, not all of it
