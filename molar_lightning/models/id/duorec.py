"""DuoRec: SASRec plus a contrastive regulariser against representation degeneration.

Qiu, Huang, Yin & Wang, "Contrastive Learning for Representation Degeneration Problem in Sequential
Recommendation", WSDM 2022 (reference code: github.com/RuihongQiu/DuoRec, ``contrast=us_x``). The
encoder is SASRec unchanged; the regulariser, :class:`~molar_lightning.losses.DuoRecContrastiveLoss`,
pulls together two views of each training prefix, a second dropout pass and another prefix with the same
next item, against the other views of its group. This class only carries its settings, so that a config or
checkpoint naming DuoRec trains with it wherever the model trains.

What the authors' code does, and the defaults here follow (read in ``recbole/model/sequential_recommender/
duorec.py``, ``recbole/data/dataset/sequential_dataset.py`` and ``recbole/data/dataloader/
sequential_dataloader.py`` of their repository, and ``duorec.sh``):

- every prefix of every training sequence (at most 50 items) is one sample, its next item the target, and a
  training batch holds 256 such samples drawn at random;
- with ``contrast=us_x`` the loss is the next-item cross entropy of one dropout pass plus ``lmd_sem`` (0.1)
  times an InfoNCE between a second dropout pass of the sample and a pass of its supervised positive: a
  prefix drawn uniformly among the other training prefixes with the same target (the sample itself when
  there is none). ``lmd`` is not used by ``us_x``;
- the similarity is the dot product divided by ``tau`` = 1 (``sim=dot``); states are the last block's
  post-LayerNorm output, as here;
- each of the ``2N`` views has the other ``2N - 2`` as negatives (``mask_correlated_samples`` removes only
  the view itself and its partner): same-target samples stay negatives.

Training here is causal over windows, so a window of ``L`` items holds ``L`` of those samples: position
``t``'s state is the prefix ending there. With ``positions="all"`` each of them is a sample, as in the
authors' code; ``positions="last"`` (this project's form before issue 14) takes only each window's last
position, about 1/L of the samples. With ``positives="data"`` (the authors') each sample's positive is a
prefix that the DataModule draws from all training prefixes with its target (``same_target_positives`` set
to the same ``positions``), run through the encoder in a third pass: at the shipped batch of about 256
positions (the authors' step) that is about 256 prefixes a step, the authors' cost, and 99.9% of ML-100K's
positions find a partner. ``positives="batch"`` draws the partner among the batch's own samples and needs no
third pass, but at that batch 73% of the positions find none and take their own state (the unsupervised
view). docs/id_models.md has the measurements.

Every SASRec argument (``hidden_size``, ``dropout``, ...) is accepted and forwarded (``--help`` lists them,
and the CLI's data links see them: jsonargparse follows the forwarding); ``dropout`` also makes the second
view, so 0 turns it into a copy of the main pass.
"""

from typing import Literal

from molar_lightning.losses import DuoRecContrastiveLoss
from molar_lightning.models.id.sasrec import SASRec


class DuoRec(SASRec):
    """SASRec with DuoRec's contrastive regulariser as its ``auxiliary_loss`` (DuoRec in the paper).

    Scoring is SASRec's; the tasks add ``auxiliary_loss`` to the next-item loss. Defaults are the authors'
    (``duorec.sh``: ``lmd_sem=0.1``, ``tau=1``, ``sim=dot``, batch 256, every prefix a sample, its positive
    drawn from the data, their mask).

    Args:
        num_items: number of items ``N``; ids run ``1..N`` and 0 is padding.
        contrastive_weight: multiplies the contrastive loss before it joins the next-item loss
            (the authors' ``lmd_sem``); 0 trains plain SASRec.
        temperature: divides the similarities inside the contrastive loss (``tau``).
        similarity: ``dot`` product (the authors') or ``cos`` ine similarity between views.
        positions: the contrastive samples: ``all`` positions with a target (the authors': every prefix), or
            each window's ``last``.
        positives: each sample's supervised view: a same-target prefix from the ``data`` (the authors'; needs
            ``data.init_args.same_target_positives`` set to ``positions``), or another sample of the ``batch``.
        negatives: ``authors``: every other view of the group; ``drop_same_target`` also leaves out views
            of samples with the same next item.
        contrastive_group_size: most samples contrasted together (the authors' batch, 256).
    """

    def __init__(
        self,
        num_items: int,
        contrastive_weight: float = 0.1,
        temperature: float = 1.0,
        similarity: Literal["dot", "cos"] = "dot",
        positions: Literal["all", "last"] = "all",
        positives: Literal["data", "batch"] = "data",
        negatives: Literal["authors", "drop_same_target"] = "authors",
        contrastive_group_size: int = 256,
        **kwargs,
    ) -> None:
        super().__init__(num_items, **kwargs)
        self.auxiliary_loss = DuoRecContrastiveLoss(contrastive_weight, temperature, similarity, positions,
                                                    positives, negatives, contrastive_group_size)
