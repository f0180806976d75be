"""DuoRec: SASRec plus a contrastive regulariser against representation degeneration.

Qiu, Huang, Yin & Wang, "Contrastive Learning for Representation Degeneration Problem in Sequential
Recommendation", WSDM 2022 (reference code: github.com/RuihongQiu/DuoRec, ``contrast=us_x``). The
encoder is SASRec unchanged; the regulariser, :class:`~molar_lightning.losses.DuoRecContrastiveLoss`,
pulls together two views of each training sequence, a second dropout pass (unsupervised view) and another
sequence with the same next item (supervised view), against every other view in the batch. This class only
carries its settings, so that a config or checkpoint naming DuoRec trains with it wherever the model trains.
"""

from typing import Literal

from molar_lightning.losses import DuoRecContrastiveLoss
from molar_lightning.models.id.sasrec import SASRec


class DuoRec(SASRec):
    """SASRec with DuoRec's contrastive regulariser as its ``auxiliary_loss`` (DuoRec in the paper).

    Scoring is SASRec's; the tasks add ``auxiliary_loss`` to the next-item loss. Weight and temperature
    follow the authors' ``duorec.sh`` (``lmd_sem=0.1``, ``tau=1``); the similarity defaults to cosine, not
    their dot product. With causal training over every position here, dot products of LayerNorm'd 64-dim
    states (about 64 at temperature 1) made the contrastive term dominate: on MovieLens-100K, validation
    NDCG@10 after 6 epochs was 0.028 with ``dot`` against 0.089 with ``cos`` and 0.087 for plain SASRec.

    ``dropout`` also makes the unsupervised view, so 0 turns that view into a copy. The SASRec arguments are
    listed again, not forwarded as ``**kwargs``, so that ``--help`` shows them and the CLI links only the data
    sizes DuoRec takes.

    Args:
        num_items: number of items ``N``; ids run ``1..N`` and 0 is padding.
        contrastive_weight: multiplies the contrastive loss before it joins the next-item loss
            (the paper's lambda); 0 trains plain SASRec.
        temperature: divides the similarities inside the contrastive loss.
        similarity: ``dot`` product or ``cos`` ine similarity between views.
        max_seq_len: longest history the position table covers; longer inputs are rejected.
        hidden_size: width of item embeddings and of the transformer.
        num_layers: number of transformer blocks.
        num_heads: attention heads per block; must divide ``hidden_size``.
        inner_size: width of the feed-forward layer inside each block.
        dropout: dropout on the embeddings, the attention output and the feed-forward output.
        attention_dropout: dropout on the attention probabilities.
        layer_norm_eps: epsilon of every LayerNorm.
        initializer_range: standard deviation of the normal init of embeddings and linear weights.
    """

    def __init__(
        self,
        num_items: int,
        contrastive_weight: float = 0.1,
        temperature: float = 1.0,
        similarity: Literal["dot", "cos"] = "cos",
        max_seq_len: int = 50,
        hidden_size: int = 64,
        num_layers: int = 2,
        num_heads: int = 2,
        inner_size: int = 256,
        dropout: float = 0.5,
        attention_dropout: float = 0.5,
        layer_norm_eps: float = 1e-12,
        initializer_range: float = 0.02,
    ) -> None:
        super().__init__(num_items, max_seq_len=max_seq_len, hidden_size=hidden_size, num_layers=num_layers,
                         num_heads=num_heads, inner_size=inner_size, dropout=dropout,
                         attention_dropout=attention_dropout, layer_norm_eps=layer_norm_eps,
                         initializer_range=initializer_range)
        self.auxiliary_loss = DuoRecContrastiveLoss(contrastive_weight, temperature, similarity)
