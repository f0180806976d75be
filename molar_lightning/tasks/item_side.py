"""Where ``MolarModule``'s item embeddings come from, behind one interface, always named by catalog id.

* :class:`CachedItems`: a frozen MIRM's table, read once from the cache ``molar embed`` wrote; a training
  step sees the whole catalog (the fast mode, and the HLLM-frozen-style rows).
* :class:`EncodedItems`: a MIRM trained end to end (the paper's stage 2). A training step embeds the step's
  items, the batch's own and random negatives whose inputs the DataLoader's workers built
  (``TrainBatch.step_items``); evaluation embeds the whole catalog, a share per process, all-gathered.

Both give a training step ``(table, catalog id of each of its rows, the batch's item_seq as rows of the
table)`` and evaluation the catalog table ``[N + 1, D]``, so the losses, their masks and the gathers across
processes only ever see catalog ids.
"""

import json
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch import nn

from molar_lightning.batch import ItemBatch, TrainBatch
from molar_lightning.losses import gather_across_ranks
from molar_lightning.models.mirm import MultimodalItemEncoder
from molar_lightning.user_error import MissingInputError

CACHE_FILE = "embeddings.safetensors"
SOURCE_FILE = "source.json"  # written by molar embed beside the embeddings: the prepared data set they are of
# Moves a batch to the module's device (LightningModule.transfer_batch_to_device with the device bound).
ToDevice = Callable[[ItemBatch], ItemBatch]


def load_item_table(path: Union[str, list[str]]) -> torch.Tensor:
    """``[N + 1, D]`` float32 from a finished cache folder (``molar embed`` prints it) or its safetensors file;
    a list of them is concatenated feature-wise (e.g. text and image embeddings)."""
    if not isinstance(path, str):
        return torch.cat([load_item_table(part) for part in path], dim=-1)
    file = Path(path) / CACHE_FILE if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise MissingInputError(f"item_embeddings: {file} does not exist; run `molar embed --config <MIRM yaml>` "
                                f"and pass the folder it prints")
    return load_file(str(file))["embeddings"].float()


class CachedItems(nn.Module):
    """A frozen MIRM's item table, kept in fp32 (a buffer: autocast and mixed precision never cast it).

    Args:
        path: a finished cache folder or its safetensors file, or a list of them (concatenated).
    """

    def __init__(self, path: Union[str, list[str]]) -> None:
        super().__init__()
        self.path = path
        self.register_buffer("table", load_item_table(path), persistent=False)

    @property
    def width(self) -> int:
        return self.table.shape[-1]

    def training_items(self, batch: TrainBatch, to_device: ToDevice) -> tuple[torch.Tensor, torch.Tensor,
                                                                             torch.Tensor]:
        """The whole table, its row ids, and the batch as it is."""
        return self.table, torch.arange(len(self.table), device=self.table.device), batch.item_seq

    def catalog(self, to_device: ToDevice) -> torch.Tensor:
        return self.table

    def embed_catalog(self, to_device: ToDevice) -> None:
        """Nothing to do: the table is the catalog."""

    def drop_catalog(self) -> None:
        """Nothing to do: the table is the model's, kept for training."""

    def data_problem(self, num_items: int, dataset: str) -> Optional[str]:
        """Why this table does not belong to a data set of ``num_items`` items prepared as ``dataset`` (its
        folder name, a digest of the raw files and parameters), or None. Caches written before ``source.json``
        are checked by size only."""
        if len(self.table) != num_items + 1:
            return (f"item_embeddings {self.path} has {len(self.table) - 1} items but the data set has "
                    f"{num_items}: it was embedded from other data; run `molar embed` with this data "
                    f"configuration and pass the folder it prints")
        for part in [self.path] if isinstance(self.path, str) else self.path:
            source = (Path(part) if Path(part).is_dir() else Path(part).parent) / SOURCE_FILE
            recorded = json.loads(source.read_text())["dataset"] if source.is_file() else dataset
            if recorded != dataset:
                return (f"item_embeddings {part} was embedded from the prepared data set {recorded}, not {dataset} "
                        f"(same item count, other data or preparation settings); run `molar embed` with this data "
                        f"configuration and pass the folder it prints")
        return None


class EncodedItems(nn.Module):
    """A MIRM trained end to end, embedding the items each step needs.

    Args:
        encoder: the MIRM.
        item_batch_size: items per MIRM forward when embedding the whole catalog.
    """

    def __init__(self, encoder: MultimodalItemEncoder, item_batch_size: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.item_batch_size = item_batch_size
        self.num_items = 0
        self.item_inputs: Optional[Callable[[Sequence[int]], ItemBatch]] = None
        self.catalog_batches: Optional[Callable[[int, tuple[int, ...]], Iterable[ItemBatch]]] = None
        self.table: Optional[torch.Tensor] = None  # the catalog, embedded at the start of evaluation

    @property
    def width(self) -> int:
        return self.encoder.hidden_size

    def connect(self, item_inputs: Callable[[Sequence[int]], ItemBatch], num_items: int,
                catalog_batches: Optional[Callable[[int, tuple[int, ...]], Iterable[ItemBatch]]] = None) -> None:
        """See :meth:`molar_lightning.tasks.molar.MolarModule.connect_item_inputs`."""
        self.item_inputs = item_inputs
        self.num_items = num_items
        self.catalog_batches = catalog_batches or (lambda batch_size, item_ids: (
            item_inputs(chunk.tolist()) for chunk in torch.tensor(item_ids).split(batch_size)))

    def encode(self, batch: ItemBatch) -> torch.Tensor:
        """The MIRM forward over an item batch already on the device: ``[K, H]`` in float32, as a cached table,
        whatever the MIRM's own dtype (a bf16 MIRM beside a float32 DUEG and losses)."""
        return self.encoder(batch.input_ids, batch.attention_mask, batch.lengths, batch.mm_token_type_ids,
                            batch.image_inputs).float()

    def embed(self, item_ids: torch.Tensor, to_device: ToDevice) -> torch.Tensor:
        """MIRM embeddings ``[K, H]`` of ``item_ids [K]``, their inputs built in this process."""
        batch = to_device(self.item_inputs(item_ids.tolist()))
        if not torch.equal(batch.item_ids, item_ids):
            raise ValueError("item_inputs must return the items in the order asked for")
        return self.encode(batch)

    def training_items(self, batch: TrainBatch, to_device: ToDevice) -> tuple[torch.Tensor, torch.Tensor,
                                                                             torch.Tensor]:
        """The step's items (``batch.step_items``, ascending ids) embedded now, as rows ``1..K`` of a table the
        user model reads through remapped ids; the ids of the rows stay catalog ids."""
        if batch.step_items is None:
            raise ValueError("end-to-end training needs each batch's item inputs (TrainBatch.step_items), which "
                             "the DataModule's train_collate builds once ItemInputsCallback has set it up; add "
                             "molar_lightning.callbacks.item_inputs.ItemInputsCallback to trainer.callbacks")
        ids = batch.step_items.item_ids
        local = torch.zeros(self.num_items + 1, dtype=torch.long, device=ids.device)
        local[ids] = torch.arange(1, len(ids) + 1, device=ids.device)
        embedded = self.encode(batch.step_items)
        table = torch.cat([embedded.new_zeros(1, embedded.shape[-1]), embedded])
        return table, torch.cat([ids.new_zeros(1), ids]), local[batch.item_seq]

    def catalog(self, to_device: ToDevice) -> torch.Tensor:
        """The table embedded at the start of this evaluation; outside one (serving a checkpoint), embedded now
        and kept until :meth:`drop_catalog`."""
        if self.table is None:
            self.embed_catalog(to_device)
        return self.table

    def embed_catalog(self, to_device: ToDevice) -> None:
        """Every item's embedding: each process embeds every ``world``-th item and the parts are all-gathered,
        so the table equals one process's. The parts are padded to one length (repeating an item), since under
        FSDP every process must run the MIRM as many times as the others."""
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        mine = list(range(1 + rank, self.num_items + 1, world))
        mine += mine[-1:] * (-(-self.num_items // world) - len(mine))
        ids, rows = [], []
        with torch.no_grad():
            for batch in self.catalog_batches(self.item_batch_size, tuple(mine)):
                batch = to_device(batch)
                ids.append(batch.item_ids)
                rows.append(self.encode(batch))
        ids, rows = torch.cat(ids), torch.cat(rows)
        ids, rows = gather_across_ranks(ids), gather_across_ranks(rows)
        table = rows.new_zeros(self.num_items + 1, rows.shape[-1])
        table[ids] = rows
        self.table = table

    def drop_catalog(self) -> None:
        """Free the evaluation's table (``[N + 1, D]``, 3.3 GB at Pixel8M in float32): training never reads it,
        and the next evaluation embeds the catalog again from the weights it then has."""
        self.table = None

    def data_problem(self, num_items: int, dataset: str) -> Optional[str]:
        """The MIRM embeds the data set's own items: nothing to check."""
        return None

