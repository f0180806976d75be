"""``molar embed``: the item embeddings of an experiment's MIRM encoder, written into the on-disk cache.

``--embed.*`` options are embed's own (:func:`~molar_lightning.callbacks.item_embedding_cache.extract_item_embeddings`);
the rest build the experiment (``--config X.yaml``, ``--data...``, ``--model...``, ``--trainer...``) whose
``model.encoder`` embeds its data's items.
"""

from typing import Optional

from jsonargparse import ArgumentParser

from molar_lightning.callbacks.item_embedding_cache import ItemEmbeddingCache, extract_item_embeddings
from molar_lightning.cli import build_cli
from molar_lightning.data.catalog import ItemCatalog

DESCRIPTION = "item embeddings of an experiment's MIRM encoder into the on-disk cache (resumable)"
USAGE = ("--embed.* options are embed's own; the rest build the experiment (--config X.yaml, --data..., --model..., "
         "--trainer...) whose model.encoder embeds its data's items")


def embed(args: list[str]) -> Optional[ItemEmbeddingCache]:
    """Run ``molar embed`` with ``args``; returns the finished cache (None for ``--help``)."""
    parser = ArgumentParser(prog="molar embed", description=f"{DESCRIPTION}. {USAGE}")
    parser.add_function_arguments(extract_item_embeddings, "embed", skip={"trainer", "module", "catalog"})
    own = {i for i, arg in enumerate(args) if arg.startswith("--embed.")
           or (i and args[i - 1].startswith("--embed.") and "=" not in args[i - 1])}
    if "-h" in args or "--help" in args:
        parser.print_help()
        return None
    options = parser.parse_args([args[i] for i in sorted(own)]).embed
    experiment = [arg for i, arg in enumerate(args) if i not in own]
    # One process embeds each batch once: the item loader shards the batches, so no distributed sampler.
    cli = build_cli(["--trainer.use_distributed_sampler=false", "--trainer.logger=false", *experiment], run=False)
    catalog = getattr(cli.datamodule, "catalog", None) or ItemCatalog(cli.datamodule.dataset)
    cache = extract_item_embeddings(cli.trainer, cli.model, catalog, **vars(options))
    if cli.trainer.is_global_zero:
        print(f"{cache.num_items:,} item embeddings of size {cache.meta['dim']} in {cache.folder}")
    return cache
