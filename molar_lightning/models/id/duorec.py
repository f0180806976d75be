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

    Every SASRec argument (``hidden_size``, ``dropout``, ...) is accepted and forwarded (``--help`` lists
    them, and the CLI's data links see them: jsonargparse follows the forwarding); ``dropout`` also makes
    the unsupervised view, so 0 turns that view into a copy.

    Args:
        num_items: number of items ``N``; ids run ``1..N`` and 0 is padding.
        contrastive_weight: multiplies the contrastive loss before it joins the next-item loss
            (the paper's lambda); 0 trains plain SASRec.
        temperature: divides the similarities inside the contrastive loss.
        similarity: ``dot`` product or ``cos`` ine similarity between views.
    """

    def __init__(
        self,
        num_items: int,
        contrastive_weight: float = 0.1,
        temperature: float = 1.0,
        similarity: Literal["dot", "cos"] = "cos",
        **kwargs,
    ) -> None:
        super().__init__(num_items, **kwargs)
        self.auxiliary_loss = DuoRecContrastiveLoss(contrastive_weight, temperature, similarity)
