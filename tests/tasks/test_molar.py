"""MolarModule on tiny data: the loss falls, alpha = 0 isolates the content path from the ID model, a frozen
ID model loads from its checkpoint and stays put, the cached mode never runs MIRM while the end-to-end mode
trains it (under DDP too, with negatives and masks in catalog ids), post-alignment masks the batch's
same-user windows and maps the ID width only through the configured projection, collapse stops training, and
the fused score is what it says."""

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors.torch import save_file
from torch import nn

from molar_lightning.batch import ItemBatch, TrainBatch
from molar_lightning.callbacks.evaluation import RankingEvaluationCallback
from molar_lightning.callbacks.item_embedding_cache import extract_item_embeddings
from molar_lightning.callbacks.item_inputs import ItemInputsCallback
from molar_lightning.data.catalog import ItemCatalog
from molar_lightning.data.datamodule import MovieLensDataModule
from molar_lightning.data.synthetic import write_movielens
from molar_lightning.losses import ContentInfoNCELoss, EmbeddingCollapseError, SampledBCELoss, UserAlignmentLoss
from molar_lightning.models.dueg import SASRecUserEncoder
from molar_lightning.models.id.duorec import DuoRec
from molar_lightning.models.id.sasrec import SASRec
from molar_lightning.models.mirm import MultimodalItemEncoder
from molar_lightning.tasks.mirm_alignment import MIRMAlignmentModule
from molar_lightning.tasks.item_side import EncodedItems
from molar_lightning.tasks.molar import MolarModule
from tests.models.conftest import qwen_tokenizer_dir, tiny_qwen2_dir  # noqa: F401 - fixtures

WIDTH = 16
ID_WIDTH = 8  # the ID models' width: post-alignment maps it to WIDTH through align_projection


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory) -> MovieLensDataModule:
    folder = tmp_path_factory.mktemp("synthetic")
    write_movielens(str(folder / "raw"), num_users=80, num_items=40, mean_length=12)
    return MovieLensDataModule(str(folder / "raw"), cache_dir=str(folder / "cache"), max_seq_len=10, batch_size=32)


@pytest.fixture(scope="module")
def item_file(datamodule, tmp_path_factory) -> str:
    torch.manual_seed(0)
    table = torch.randn(datamodule.num_items + 1, WIDTH)
    table[0] = 0
    path = tmp_path_factory.mktemp("items") / "embeddings.safetensors"
    save_file({"embeddings": table}, str(path))
    return str(path)


def sasrec(num_items: int, seed: int) -> SASRec:
    torch.manual_seed(seed)
    return SASRec(num_items, max_seq_len=10, hidden_size=ID_WIDTH, num_heads=2, inner_size=16, dropout=0.0,
                  attention_dropout=0.0)


def molar(datamodule, item_file: str, id_seed: int = 1, positions: int = 10, **options) -> MolarModule:
    torch.manual_seed(0)
    user_encoder = SASRecUserEncoder(WIDTH, max_seq_len=positions, hidden_size=16, inner_size=32, dropout=0.0,
                                     attention_dropout=0.0)
    options.setdefault("encoder", sasrec(datamodule.num_items, id_seed))
    options.setdefault("align_projection", nn.Linear(ID_WIDTH, WIDTH))
    return MolarModule(user_encoder, item_embeddings=item_file, **options)


def trainer(epochs: int = 1, **options) -> pl.Trainer:
    options.setdefault("enable_checkpointing", False)
    return pl.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, **options)


class EpochLosses(pl.Callback):
    def __init__(self) -> None:
        self.epochs: list[list[float]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epochs.append([])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.epochs[-1].append(float(outputs["loss"]))


def a_batch(datamodule) -> TrainBatch:
    torch.manual_seed(0)
    return next(iter(datamodule.train_dataloader()))


def content_gradients(module: MolarModule, batch: TrainBatch) -> dict[str, torch.Tensor]:
    module.zero_grad()
    torch.manual_seed(5)  # the same negatives for every module
    module.training_step(batch, 0).backward()
    return {name: p.grad.clone() for name, p in module.user_encoder.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("loss", ["infonce", "bce"])
def test_loss_falls_and_the_frozen_id_model_stays_put(loss: str, datamodule, item_file: str) -> None:
    module = molar(datamodule, item_file, loss=SampledBCELoss() if loss == "bce" else ContentInfoNCELoss(64),
                   optimizer=lambda params: torch.optim.Adam(params, lr=3e-3))
    before = {name: value.clone() for name, value in module.encoder.state_dict().items()}
    losses = EpochLosses()
    trainer(5, callbacks=[losses], limit_train_batches=6, limit_val_batches=0).fit(module, datamodule=datamodule)
    first, last = (sum(epoch) / len(epoch) for epoch in (losses.epochs[0], losses.epochs[-1]))
    assert last < 0.8 * first
    for name, value in module.encoder.state_dict().items():
        torch.testing.assert_close(value, before[name], msg=f"frozen ID model changed at {name}")


def test_with_alpha_zero_the_id_model_cannot_touch_the_content_gradients(datamodule, item_file: str) -> None:
    batch = a_batch(datamodule)
    grads = {}
    for alpha in (0.0, 0.5):
        for id_seed in (1, 2):
            grads[alpha, id_seed] = content_gradients(molar(datamodule, item_file, id_seed, align_weight=alpha), batch)
    for name, value in grads[0.0, 1].items():
        torch.testing.assert_close(value, grads[0.0, 2][name])
    assert any(not torch.allclose(value, grads[0.5, 2][name]) for name, value in grads[0.5, 1].items())


def test_id_model_loads_from_a_sequential_checkpoint_and_trains_jointly_on_request(datamodule, item_file: str,
                                                                                   tmp_path: Path) -> None:
    pretrained = sasrec(datamodule.num_items, seed=9)
    checkpoint = tmp_path / "sasrec.ckpt"
    torch.save({"state_dict": {f"encoder.{key}": value for key, value in pretrained.state_dict().items()}}, checkpoint)
    module = molar(datamodule, item_file, encoder_checkpoint=str(checkpoint), train_encoder=True)
    for key, value in pretrained.state_dict().items():
        torch.testing.assert_close(module.encoder.state_dict()[key], value)
    assert all(p.requires_grad for p in module.encoder.parameters())
    trainer(1, limit_train_batches=2, limit_val_batches=0).fit(module, datamodule=datamodule)
    assert not torch.allclose(module.encoder.item_embedding.weight, pretrained.item_embedding.weight)
    with pytest.raises(ValueError, match="no encoder"):
        torch.save({"state_dict": {"user_encoder.x": torch.zeros(1)}}, tmp_path / "other.ckpt")
        molar(datamodule, item_file, encoder_checkpoint=str(tmp_path / "other.ckpt"))


def test_a_jointly_trained_duorec_adds_its_contrastive_loss(datamodule, item_file: str, monkeypatch) -> None:
    """DuoRec's regulariser applies wherever the ID model trains, here inside Molar; without dropout its two
    views (the last positions of the window and of its positive window, here the window itself) are the same
    pass, so its value is 0.1 x an InfoNCE computed by hand over the 2B views."""
    torch.manual_seed(1)
    duorec = DuoRec(datamodule.num_items, max_seq_len=10, hidden_size=ID_WIDTH, num_heads=2, inner_size=16, dropout=0.0,
                    attention_dropout=0.0, similarity="cos", positions="last", negatives="drop_same_target")
    module = molar(datamodule, item_file, encoder=duorec, train_encoder=True, align_weight=0.0).train()
    full = a_batch(datamodule)
    batch = TrainBatch(full.item_seq[:3], full.target_seq[:3], full.user_ids[:3], positive_seq=full.item_seq[:3])
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **options: logged.update({name: value}))
    loss = module.training_step(batch, 0)

    with torch.no_grad():
        user = F.normalize(duorec.encode_sequence(batch.item_seq, batch.mask), dim=-1)
    views, targets = torch.cat([user, user]), batch.target_seq[:, -1].repeat(2)
    assert len(set(targets.tolist())) > 1  # some views are negatives, so the loss is not trivially 0
    terms = []
    for row in range(6):  # each view: its partner (the same user's other view) against every other-target view
        partner = (row + 3) % 6
        negatives = [col for col in range(6) if col not in (row, partner) and targets[col] != targets[row]]
        logits = views[row] @ views[[partner] + negatives].T / 1.0
        terms.append(-torch.log_softmax(logits, 0)[0])
    torch.testing.assert_close(logged["train/auxiliary_loss"].detach(), 0.1 * torch.stack(terms).mean())
    parts = logged["train/next_item_loss"] + logged["train/encoder_loss"] + logged["train/auxiliary_loss"]
    torch.testing.assert_close(loss, parts)


def test_collapsed_item_embeddings_stop_training(datamodule, tmp_path: Path) -> None:
    table = torch.ones(datamodule.num_items + 1, WIDTH)
    table[0] = 0
    save_file({"embeddings": table}, str(tmp_path / "collapsed.safetensors"))
    module = molar(datamodule, str(tmp_path / "collapsed.safetensors"))
    with pytest.raises(EmbeddingCollapseError, match="collapsed"):
        trainer(1, limit_train_batches=1, limit_val_batches=0).fit(module, datamodule=datamodule)


@pytest.mark.parametrize("scoring", ["content", "id", "fused"])
def test_scoring_returns_what_the_ranking_callback_needs(scoring: str, datamodule, item_file: str) -> None:
    module = molar(datamodule, item_file, scoring=scoring, fusion_weight=0.3).eval()
    datamodule.setup("validate")
    batch = next(iter(datamodule.val_dataloader()))
    with torch.no_grad():
        out = module.validation_step(batch, 0)
        scores = out["user_emb"] @ out["item_emb"].T
        table = module.item_table()
        content = torch.nn.functional.cosine_similarity(
            module.user_encoder.encode_sequence(table[batch.item_seq], batch.mask)[:, None], table[None], dim=-1)
        id_user = module.encoder.encode_sequence(batch.item_seq, batch.mask)
        id_dot = id_user @ module.encoder.item_embeddings().T
        id_cos = torch.nn.functional.cosine_similarity(id_user[:, None], module.encoder.item_embeddings()[None], dim=-1)
    expected = {"content": content, "id": id_dot, "fused": 0.7 * content + 0.3 * id_cos}[scoring]
    torch.testing.assert_close(scores[:, 1:], expected[:, 1:], atol=1e-5, rtol=1e-4)
    module.top_k = 3
    with torch.no_grad():
        predicted = module.predict_step(batch, 0)  # the same scores, top 3 unseen items
    unseen = scores.clone()
    unseen[:, 0] = float("-inf")
    unseen.scatter_(1, batch.history, float("-inf"))
    torch.testing.assert_close(predicted["scores"], unseen.topk(3, dim=1).values, atol=1e-5, rtol=1e-4)


def test_without_an_id_model_alignment_is_refused(datamodule, item_file: str) -> None:
    with pytest.raises(ValueError, match="align_weight must be 0"):
        molar(datamodule, item_file, encoder=None)


def test_alignment_masks_the_batchs_other_windows_of_each_user(datamodule, item_file: str, monkeypatch) -> None:
    """The task hands the alignment loss the batch's user ids: windows of the same user are not negatives."""
    module = molar(datamodule, item_file, align_weight=0.5)
    batch = a_batch(datamodule)
    assert len(batch.user_ids.unique()) < len(batch.user_ids)  # some users have several windows here
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **options: logged.update({name: value}))
    loss = module.training_step(batch, 0)
    with torch.no_grad():
        content = module.user_states(module.item_table(), batch.item_seq, batch.mask, batch.item_seq)[:, -1]
        collaborative = module.post_alignment.projection(module.encoder.encode_sequence(batch.item_seq, batch.mask))
    torch.testing.assert_close(logged["train/align_loss"].detach(),
                               UserAlignmentLoss(0.07)(content, collaborative, batch.user_ids))
    unmasked = UserAlignmentLoss(0.07)(content, collaborative, torch.arange(len(batch.user_ids)))
    assert not torch.allclose(logged["train/align_loss"].detach(), unmasked)
    torch.testing.assert_close(loss, logged["train/next_item_loss"] + 0.5 * logged["train/align_loss"])


def test_alignment_across_widths_needs_an_explicit_projection(datamodule, item_file: str) -> None:
    with pytest.raises(ValueError, match=r"8-wide user embedding with the 16-wide.*align_projection.*"
                                         r"in_features: 8, out_features: 16"):
        molar(datamodule, item_file, align_projection=None)
    with pytest.raises(ValueError, match="maps the ID model's 8-wide user embedding to 10 dimensions"):
        molar(datamodule, item_file, align_projection=nn.Linear(ID_WIDTH, 10))
    # equal widths need none; without alignment (w/o CL) none is used or kept
    equal = molar(datamodule, item_file, encoder=SASRec(datamodule.num_items, max_seq_len=10, hidden_size=WIDTH),
                  align_projection=None)
    assert isinstance(equal.post_alignment.projection, nn.Identity)
    assert molar(datamodule, item_file, align_weight=0.0).post_alignment is None


def test_checkpoints_without_a_recorded_projection_load_with_one_given(datamodule, item_file: str,
                                                                       tmp_path: Path) -> None:
    """Checkpoints from before ``align_projection`` was an argument record no projection but hold the Linear
    the task inserted under ``align_projection.*``; a checkpoint of a module built in Python records none
    either. Loading one names the setting, and with it loads the saved Linear strictly."""
    trained = molar(datamodule, item_file)
    trainer(1, limit_train_batches=1, limit_val_batches=0, enable_checkpointing=True,
            callbacks=[ModelCheckpoint(tmp_path, save_last=True)]).fit(trained, datamodule=datamodule)
    last = tmp_path / "last.ckpt"
    assert "align_projection" not in torch.load(last, weights_only=True)["hyper_parameters"]
    parts = dict(user_encoder=trained.user_encoder, encoder=trained.encoder)
    with pytest.raises(ValueError, match=r"align_projection=torch.nn.Linear\(8, 16\)"):
        MolarModule.load_from_checkpoint(last, weights_only=True, **parts)
    reloaded = MolarModule.load_from_checkpoint(last, weights_only=True, align_projection=nn.Linear(ID_WIDTH, WIDTH),
                                                **parts)
    torch.testing.assert_close(reloaded.post_alignment.projection.weight, trained.post_alignment.projection.weight)
    torch.testing.assert_close(reloaded.post_alignment.projection.bias, trained.post_alignment.projection.bias)


# ----- cached vs end-to-end MIRM --------------------------------------------------------------------------------
class CountForwards:
    def __init__(self, monkeypatch) -> None:
        self.calls = 0
        original = MultimodalItemEncoder.forward

        def counting(encoder, *args, **kwargs):
            self.calls += 1
            return original(encoder, *args, **kwargs)

        monkeypatch.setattr(MultimodalItemEncoder, "forward", counting)


@pytest.fixture
def fixture_data(ml1m_dir: Path, tmp_path: Path) -> MovieLensDataModule:
    return MovieLensDataModule(str(ml1m_dir), cache_dir=str(tmp_path / "cache"), max_seq_len=6, batch_size=4,
                               eval_batch_size=4)


def text_mirm(tiny_qwen2_dir: Path, finetuning: str) -> MultimodalItemEncoder:
    torch.manual_seed(0)
    return MultimodalItemEncoder(str(tiny_qwen2_dir), modality="text", pooling="mean", finetuning=finetuning)


def content_molar(mirm_width: int, num_items: int, **options) -> MolarModule:
    torch.manual_seed(0)
    return MolarModule(SASRecUserEncoder(mirm_width, max_seq_len=6, hidden_size=8, inner_size=16),
                       encoder=SASRec(num_items, max_seq_len=6, hidden_size=ID_WIDTH, inner_size=16),
                       align_projection=nn.Linear(ID_WIDTH, mirm_width), **options)


def test_cached_mode_never_runs_mirm(fixture_data, tiny_qwen2_dir: Path, tmp_path: Path, monkeypatch) -> None:
    mirm = text_mirm(tiny_qwen2_dir, "frozen").eval()
    catalog = ItemCatalog(fixture_data.dataset)
    cache = extract_item_embeddings(trainer(use_distributed_sampler=False), MIRMAlignmentModule(mirm), catalog,
                                    cache_root=str(tmp_path / "items"))
    counter = CountForwards(monkeypatch)
    module = content_molar(mirm.hidden_size, fixture_data.num_items, item_embeddings=str(cache.folder))
    trainer(1, callbacks=[RankingEvaluationCallback()], default_root_dir=tmp_path).fit(module, datamodule=fixture_data)
    assert counter.calls == 0
    torch.testing.assert_close(module.items.table, cache.load())


def test_end_to_end_mode_trains_mirm_on_the_batch_items(fixture_data, tiny_qwen2_dir: Path, tmp_path: Path,
                                                       monkeypatch) -> None:
    mirm = text_mirm(tiny_qwen2_dir, "lora")
    module = content_molar(mirm.hidden_size, fixture_data.num_items, item_encoder=mirm, negatives_per_step=3,
                           optimizer=lambda params: torch.optim.Adam(params, lr=1e-2))
    lora = {name: p.clone() for name, p in mirm.named_parameters() if "lora_B" in name}
    counter = CountForwards(monkeypatch)
    trainer(1, limit_train_batches=2, callbacks=[ItemInputsCallback(), RankingEvaluationCallback()],
            default_root_dir=tmp_path).fit(module, datamodule=fixture_data)
    assert counter.calls >= 2
    assert any(not torch.equal(p, lora[name]) for name, p in mirm.named_parameters() if name in lora)
    assert module.item_table().shape == (fixture_data.num_items + 1, mirm.hidden_size)


class CatalogAtValidationEnd(pl.Callback):
    """Keeps the end-to-end catalog table of the last validation (the task frees it after each evaluation)."""

    def on_validation_epoch_end(self, trainer, pl_module: MolarModule) -> None:
        self.table = pl_module.items.table.clone()


def test_end_to_end_training_items_are_built_in_the_dataloader_workers(ml1m_dir: Path, tiny_qwen2_dir: Path,
                                                                      tmp_path: Path, monkeypatch) -> None:
    data = MovieLensDataModule(str(ml1m_dir), cache_dir=str(tmp_path / "cache"), max_seq_len=6, batch_size=4,
                               num_workers=1)
    mirm = text_mirm(tiny_qwen2_dir, "lora")
    module = content_molar(mirm.hidden_size, data.num_items, item_encoder=mirm, negatives_per_step=3)
    built_in_main = []
    monkeypatch.setattr(EncodedItems, "embed", lambda self, ids, to_device: built_in_main.append(ids))
    counter = CountForwards(monkeypatch)
    validation_catalog = CatalogAtValidationEnd()
    run = trainer(1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0, default_root_dir=tmp_path,
                  callbacks=[ItemInputsCallback(), RankingEvaluationCallback(), validation_catalog])
    run.fit(module, datamodule=data)
    catalog_forwards = -(-data.num_items // module.items.item_batch_size)  # validation embeds the catalog once
    assert run.global_step == 2 and counter.calls == 2 + catalog_forwards and not built_in_main
    monkeypatch.undo()
    with torch.no_grad():  # the catalog the workers built equals the items embedded one request at a time
        expected = module.eval().items.embed(torch.arange(1, data.num_items + 1), module.to_device)
    torch.testing.assert_close(validation_catalog.table[1:], expected)

    batch = next(iter(data.train_dataloader()))  # what the worker sent: the batch's items, then random ones
    own = torch.cat([batch.item_seq.flatten(), batch.target_seq.flatten()]).unique()
    own = own[own != 0]
    step = batch.step_items.item_ids
    assert torch.equal(step, step.sort().values) and set(own.tolist()) <= set(step.tolist())
    assert len(step) <= len(own) + 3
    expected = module.items.item_inputs(step.tolist())
    assert torch.equal(batch.step_items.input_ids, expected.input_ids)


def test_end_to_end_training_without_the_callback_is_refused_with_a_hint(fixture_data, tiny_qwen2_dir: Path) -> None:
    mirm = text_mirm(tiny_qwen2_dir, "lora")
    module = content_molar(mirm.hidden_size, fixture_data.num_items, item_encoder=mirm)
    module.connect_item_inputs(lambda ids: None, fixture_data.num_items)  # catalog only, no training inputs
    with pytest.raises(ValueError, match="ItemInputsCallback"):
        trainer(1, limit_train_batches=1, limit_val_batches=0).fit(module, datamodule=fixture_data)


def lora_mirm(tiny_qwen2_dir: Path, seed: int) -> MultimodalItemEncoder:
    """Text MIRM with LoRA and the trainable [Cur_Item] vector; ``seed`` sets the adapters' initial weights."""
    torch.manual_seed(seed)
    return MultimodalItemEncoder(str(tiny_qwen2_dir), modality="text", finetuning="lora")


def test_end_to_end_checkpoints_keep_trainable_mirm_weights_only_and_load_back(fixture_data, tiny_qwen2_dir: Path,
                                                                              tmp_path: Path) -> None:
    def end_to_end(seed: int) -> MolarModule:
        mirm = lora_mirm(tiny_qwen2_dir, seed)
        return content_molar(mirm.hidden_size, fixture_data.num_items, item_encoder=mirm, negatives_per_step=3,
                             optimizer=lambda params: torch.optim.Adam(params, lr=1e-3))

    def fit(module: MolarModule, epochs: int, **options) -> pl.Trainer:
        run = trainer(epochs, limit_train_batches=2, limit_val_batches=0, enable_checkpointing=True,
                      callbacks=[ItemInputsCallback(), ModelCheckpoint(tmp_path / "ckpt", save_last=True)])
        run.fit(module, datamodule=fixture_data, **options)
        return run

    def catalog_embeddings(module: MolarModule) -> torch.Tensor:
        module.connect_item_inputs(trained.items.item_inputs, fixture_data.num_items)
        with torch.no_grad():
            return module.eval().items.embed(torch.arange(1, fixture_data.num_items + 1), module.to_device)

    trained = end_to_end(seed=0)
    fit(trained, 1)
    last = tmp_path / "ckpt" / "last.ckpt"
    state = torch.load(last, weights_only=True)["state_dict"]
    saved = {key for key in state if key.startswith("items.encoder.")}
    trainable = {f"items.encoder.{name}" for name, p in trained.item_encoder.named_parameters() if p.requires_grad}
    assert saved == trainable
    assert "items.encoder.item_token_embedding" in saved and any("lora_B" in key for key in saved)
    assert all(key in state for key in trained.state_dict() if not key.startswith("items.encoder."))
    torch.save(trained.state_dict(), tmp_path / "everything.pt")
    assert last.stat().st_size < (tmp_path / "everything.pt").stat().st_size / 10

    expected = catalog_embeddings(trained)
    fresh = end_to_end(seed=1)  # other adapters and LoRA B still zero: other embeddings until loaded
    assert not torch.allclose(catalog_embeddings(fresh), expected)
    reloaded = MolarModule.load_from_checkpoint(last, weights_only=True, user_encoder=fresh.user_encoder,
                                                encoder=fresh.encoder, item_encoder=fresh.item_encoder,
                                                align_projection=fresh.post_alignment.projection)
    torch.testing.assert_close(catalog_embeddings(reloaded), expected)

    resumed = end_to_end(seed=2)
    adapters = {key: value for key, value in state.items() if "lora_B" in key}
    run = fit(resumed, 2, ckpt_path=str(last))
    assert run.global_step == 4  # two steps restored, two more taken
    now = resumed.state_dict()
    assert all(not torch.equal(now[key], value) for key, value in adapters.items())


def test_collm_id_tokens_keep_states_causal_and_let_the_id_model_in(datamodule, item_file: str) -> None:
    module = molar(datamodule, item_file, positions=20, id_tokens=True, align_weight=0.0).eval()
    batch = a_batch(datamodule)
    table = module.item_table()
    with torch.no_grad():
        states = module.user_states(table, batch.item_seq, batch.mask, batch.item_seq)
        last = module.user_states(table, batch.item_seq, batch.mask, batch.item_seq, last_only=True)
        changed = batch.item_seq.clone()
        changed[:, -1] = torch.where(changed[:, -1] == 1, 2, 1)
        with_other_id = module.user_states(table, batch.item_seq, batch.mask, changed)
    assert states.shape == (*batch.item_seq.shape, WIDTH)
    torch.testing.assert_close(last, states[:, -1])
    torch.testing.assert_close(with_other_id[:, :-1], states[:, :-1])  # a later ID token never reaches back
    assert not torch.allclose(with_other_id[:, -1], states[:, -1])


def test_end_to_end_mode_without_item_inputs_is_refused(fixture_data, tiny_qwen2_dir: Path) -> None:
    mirm = text_mirm(tiny_qwen2_dir, "lora")
    module = content_molar(mirm.hidden_size, fixture_data.num_items, item_encoder=mirm)
    with pytest.raises(ValueError, match="ItemInputsCallback"):
        trainer(1, limit_train_batches=1).fit(module, datamodule=fixture_data)


# ----- through the CLI and the shipped config ----------------------------------------------------------------
def test_shipped_molar_config_fits_tests_and_reloads_from_its_checkpoint(ml1m_dir: Path, tiny_qwen2_dir: Path,
                                                                          tmp_path: Path) -> None:
    from molar_lightning.commands import main

    torch.manual_seed(0)
    table = torch.randn(11, WIDTH)
    table[0] = 0
    save_file({"embeddings": table}, str(tmp_path / "items.safetensors"))
    pretrained = SASRec(10, max_seq_len=6)
    torch.save({"state_dict": {f"encoder.{k}": v for k, v in pretrained.state_dict().items()}}, tmp_path / "id.ckpt")
    dueg = "--model.init_args.user_encoder.init_args."
    configs = Path(__file__).parents[2] / "configs" / "movielens"
    main(["fit", "--config", str(configs / "molar.yaml"), "--config", str(configs / "molar_cached.yaml"),
          f"{dueg}backbone", str(tiny_qwen2_dir), f"{dueg}input_size", str(WIDTH),
          f"{dueg}gradient_checkpointing", "false",
          "--model.init_args.align_projection.init_args.out_features", str(WIDTH),  # the config's 1536: Qwen2-VL-2B
          "--model.init_args.item_embeddings", str(tmp_path / "items.safetensors"),
          "--model.init_args.encoder_checkpoint", str(tmp_path / "id.ckpt"),
          "--model.init_args.align_weight", "0.2", "--model.init_args.align_temperature", "0.1",
          "--data.init_args.data_dir", str(ml1m_dir), "--data.init_args.cache_dir", str(tmp_path / "cache"),
          "--data.init_args.max_seq_len", "6", "--data.init_args.batch_size", "4",
          "--trainer.precision", "32", "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path / "run"),
          "--trainer.enable_progress_bar", "false", "--trainer.logger", "false"])
    assert (tmp_path / "run" / "results.json").is_file()
    (best,) = (tmp_path / "run").rglob("best-*.ckpt")
    module = MolarModule.load_from_checkpoint(best, weights_only=True)
    assert module.align_weight == 0.2 and module.post_alignment.loss.temperature == 0.1
    assert module.encoder.item_embeddings().shape == (11, 64)  # data.num_items reached the ID model
    assert module.post_alignment.projection.weight.shape == (WIDTH, 64)  # the config's projection, rebuilt and loaded
    for key, value in pretrained.state_dict().items():  # frozen during alignment
        torch.testing.assert_close(module.encoder.state_dict()[key], value)
    state = torch.load(best, weights_only=True)
    (schedule,) = state["lr_schedulers"]  # the config's warm-up + cosine, its length taken from the trainer
    assert schedule["total_steps"] == state["global_step"] < schedule["warmup_steps"] == 100
    assert schedule["_last_lr"] == [pytest.approx(1e-4 * (0.01 + 0.99 * state["global_step"] / 100))]
    # DUEG's word embeddings never train: the checkpoint leaves them to the backbone path, and loading restores
    # exactly the trained DUEG (its trained weights from the checkpoint, the rest from tiny_qwen2_dir).
    saved = state["state_dict"]
    assert not any("embed_tokens" in key for key in saved)
    assert any(key.startswith("user_encoder.decoder.layers.0.") for key in saved)
    for key, value in saved.items():
        torch.testing.assert_close(module.state_dict()[key], value)


# ----- end-to-end training under DDP: step tables differ per process --------------------------------------------
E2E_ITEMS = 12
E2E_TOKENS = 5
# Each process embeds only its step's items (its batch's own plus random ones), so the two tables differ in size
# and in which global ids their rows hold; only item 12 is in both.
E2E_STEP_ITEMS = ([1, 2, 3, 5, 6, 8, 9, 10, 12], [4, 7, 11, 12])
E2E_BATCHES = (  # (item_seq, target_seq) per process, in catalog ids
    ([[1, 2, 3], [0, 6, 8]], [[2, 3, 5], [0, 8, 12]]),
    ([[4, 7, 11], [0, 0, 12]], [[7, 11, 12], [0, 0, 4]]),
)
E2E_NEGATIVES = 8


def e2e_item_inputs(item_ids) -> ItemBatch:
    """Equal-length token rows, a fixed function of each catalog id (no padding, so an item embeds the same
    whatever else is in its batch)."""
    ids = torch.tensor(list(item_ids))
    tokens = torch.tensor([[(item * 31 + j * 7) % 1000 + 10 for j in range(E2E_TOKENS)] for item in ids.tolist()])
    return ItemBatch(ids, tokens, torch.ones_like(tokens), torch.full((len(ids),), E2E_TOKENS))


def e2e_molar(backbone: str) -> MolarModule:
    torch.manual_seed(0)
    mirm = MultimodalItemEncoder(backbone, modality="text", pooling="mean", finetuning="lora")
    module = MolarModule(SASRecUserEncoder(mirm.hidden_size, max_seq_len=3, hidden_size=8, inner_size=16, dropout=0.0,
                                           attention_dropout=0.0),
                         item_encoder=mirm, encoder=None, align_weight=0.0,
                         loss=ContentInfoNCELoss(num_negatives=E2E_NEGATIVES))
    module.connect_item_inputs(e2e_item_inputs, E2E_ITEMS)
    return module.eval()  # no dropout: the step's embeddings are a function of the weights alone


def _e2e_rank_step(rank: int, folder: str, port: int, backbone: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    module = e2e_molar(backbone)
    item_seq, target_seq = (torch.tensor(part) for part in E2E_BATCHES[rank])
    batch = TrainBatch(item_seq, target_seq, torch.tensor([2 * rank, 2 * rank + 1]),
                       step_items=e2e_item_inputs(E2E_STEP_ITEMS[rank]))
    module.log = lambda *args, **kwargs: None
    torch.manual_seed(100 + rank)  # each process draws its own negatives among its table's rows
    loss = module.training_step(batch, 0)
    torch.save({"loss": loss.detach()}, f"{folder}/rank{rank}.pt")
    dist.barrier()  # no process leaves while the other still talks to it (gloo aborts otherwise)
    dist.destroy_process_group()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_end_to_end_negatives_and_masks_are_global_ids_across_processes(tiny_qwen2_dir: Path, tmp_path: Path) -> None:
    """Two processes whose step tables have 9 and 4 rows: each process's loss is the InfoNCE over the negatives
    both drew, named by catalog id, with each user's own items (wherever drawn) and the target masked."""
    import torch.multiprocessing as mp

    mp.spawn(_e2e_rank_step, args=(str(tmp_path), free_port(), str(tiny_qwen2_dir)), nprocs=2)
    module = e2e_molar(str(tiny_qwen2_dir))
    with torch.no_grad():
        catalog = torch.cat([torch.zeros(1, module.item_encoder.hidden_size),
                             module.items.embed(torch.arange(1, E2E_ITEMS + 1), module.to_device)])
    pool = []  # the negatives of both processes, as catalog ids
    for rank, step in enumerate(E2E_STEP_ITEMS):
        torch.manual_seed(100 + rank)
        pool += [step[row - 1] for row in torch.randint(1, len(step) + 1, (E2E_NEGATIVES,)).tolist()]
    assert 12 in pool[:E2E_NEGATIVES]  # process 0 draws item 12, which process 1's users own
    assert {4, 7, 11} & set(pool[E2E_NEGATIVES:])  # process 1 draws items that process 0's table does not hold
    normed = F.normalize(catalog, dim=-1)

    def expected_loss(rank: int, global_masks: bool = True) -> torch.Tensor:
        item_seq, target_seq = (torch.tensor(part) for part in E2E_BATCHES[rank])
        with torch.no_grad():
            states = F.normalize(module.user_encoder.sequence_states(catalog[item_seq], item_seq != 0), dim=-1)
        terms = []
        for row, position in (target_seq != 0).nonzero().tolist():
            target = int(target_seq[row, position])
            owned = set(item_seq[row].tolist()) | set(target_seq[row].tolist()) if global_masks else {target}
            kept = [item for item in pool if item not in owned and float(normed[target] @ normed[item]) <= 0.99]
            logits = states[row, position] @ normed[[target, *kept]].T / 0.07
            terms.append(-torch.log_softmax(logits, 0)[0])
        return torch.stack(terms).mean()

    for rank in range(2):
        measured = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)["loss"]
        torch.testing.assert_close(measured, expected_loss(rank), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(expected_loss(rank), expected_loss(rank, global_masks=False))  # masks matter
