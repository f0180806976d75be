"""Every shipped sequence encoder spells its protocol's signatures exactly: the CLI accepts a ``class_path`` for a
protocol-typed argument only when the names, kinds, annotations and defaults agree (jsonargparse's check)."""

import inspect

import pytest

from molar_lightning.models.dueg import GRU4RecUserEncoder, LLMUserEncoder, SASRecUserEncoder
from molar_lightning.models.id.duorec import DuoRec
from molar_lightning.models.id.fpmc import FPMC
from molar_lightning.models.id.gru4rec import GRU4Rec
from molar_lightning.models.id.sasrec import SASRec
from molar_lightning.models.protocol import ContentSequenceEncoder, IDSequenceEncoder


@pytest.mark.parametrize("model", [SASRec, DuoRec, GRU4Rec, FPMC], ids=lambda cls: cls.__name__)
def test_id_models_match_the_id_protocol(model: type) -> None:
    for name in ("sequence_states", "encode_sequence", "item_embeddings"):
        assert inspect.signature(getattr(model, name)) == inspect.signature(getattr(IDSequenceEncoder, name)), name


@pytest.mark.parametrize("model", [LLMUserEncoder, SASRecUserEncoder, GRU4RecUserEncoder],
                         ids=lambda cls: cls.__name__)
def test_content_encoders_match_the_content_protocol(model: type) -> None:
    """The protocol's parameters are positional-only, so only their order and annotations must agree."""
    for name in ("sequence_states", "encode_sequence"):
        ours = inspect.signature(getattr(model, name))
        protocol = inspect.signature(getattr(ContentSequenceEncoder, name))
        assert [p.annotation for p in ours.parameters.values()] == [p.annotation for p in protocol.parameters.values()]
        assert ours.return_annotation == protocol.return_annotation
