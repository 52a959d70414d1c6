"""Cold-start objectives at toy size against hand-computed values; content and profile encoding."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from mirec.config import ContentConfig, PretrainConfig, ZeroShotConfig, load
from mirec.data.attributes import (
    content_matrix,
    hash_token,
    profile_tokens,
    text_tokens,
    user_profile_matrix,
)
from mirec.data.cold_splits import cut_at_lengths
from mirec.data.splits import EvalData, TrainData
from mirec.data.vocab import Vocabulary
from mirec.errors import ConfigError, DataValidationError
from mirec.models import build_model
from mirec.models.cold_start import attach_zero_shot, zero_shot_tower
from mirec.models.content_tower import ContentItemTower
from mirec.models.mail import ZeroShotTower, blend_interests
from mirec.objectives.mail import (
    RefitTargets,
    fit_zero_shot,
    multi_hot,
    user_rank_loss,
    virtual_rank_loss,
    zero_shot_loss,
    zero_shot_terms,
)
from mirec.objectives.multiview import (
    content_view,
    info_nce,
    mean_content_norm,
    pretrain_content_tower,
    rescale_content,
)
from mirec.schema import ITEM_ATTRIBUTES, ITEM_ID, ITEM_TEXT, USER_ATTRIBUTES, USER_ID
from mirec.training.zero_shot import CO_TRAINED, refit_and_choose


def test_info_nce_matches_hand_computed_value() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [2.0, 0.0]])  # cosine: b rows are both (1, 0)
    # logits / 0.5 = [[2, 2], [0, 0]]; a->b rows: log 2, log 2; b->a: log(1+e^-2), log(1+e^2)
    expected = (math.log(2) + (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(2))) / 2) / 2
    assert info_nce(a, b, 0.5).item() == pytest.approx(expected, rel=1e-6)
    same = info_nce(a, a, 1.0).item()
    assert same == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)


def test_zero_shot_terms_match_hand_computed_values() -> None:
    out = zero_shot_terms(
        z_profile=torch.tensor([[1.0, 0.0]]),
        z_behaviour=torch.tensor([[0.0, 0.0]]),
        behaviour=torch.tensor([[1.0, 1.0]]),
        behaviour_from=(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 1.0]])),
        profile_logits_from=(torch.zeros(1, 2), torch.zeros(1, 2)),
        profile_multi_hot=torch.tensor([[0.0, 1.0]]),
    )
    assert out.parts["align"].item() == pytest.approx(0.5)
    assert out.parts["behaviour"].item() == pytest.approx(0.5)
    assert out.parts["profile"].item() == pytest.approx(2 * math.log(2), rel=1e-6)
    assert out.total.item() == pytest.approx(1.0 + 2 * math.log(2), rel=1e-6)


def test_multi_hot_ignores_padding() -> None:
    hot = multi_hot(torch.tensor([[2, 0, 3]]), 5)
    assert hot.tolist() == [[0.0, 0.0, 1.0, 1.0, 0.0]]


def test_zero_shot_loss_never_reaches_the_ranking_tower() -> None:
    tower = ZeroShotTower(2, 4, ZeroShotConfig(hidden=8, profile_buckets=16))
    user_vecs = torch.randn(3, 2, 4, requires_grad=True)
    out = zero_shot_loss(tower, torch.tensor([[1, 2], [3, 0], [4, 5]]), user_vecs)
    out.total.backward()
    assert user_vecs.grad is None
    assert tower.profile_table.weight.grad is not None


def test_blend_by_history_length() -> None:
    tower = torch.ones(3, 1, 2)
    zero = torch.zeros(3, 1, 2)
    out = blend_interests(tower, zero, torch.tensor([0, 2, 9]), max_history=5, weight=0.25)
    assert out[:, 0, 0].tolist() == [0.0, 0.75, 1.0]


def test_content_view_keeps_a_token_and_drops_whole_parts() -> None:
    tokens = torch.tensor([[5, 6, 7, 8]] * 200)
    view = content_view(tokens, 2, 0.5, torch.Generator().manual_seed(0))
    assert bool(((view != 0).sum(-1) >= 1).all())
    assert bool((view[(view != 0).any(-1)] != 0).any())
    attrs_only = (view[:, 2:] == 0).all(-1) & (view[:, :2] != 0).any(-1)
    text_only = (view[:, :2] == 0).all(-1) & (view[:, 2:] != 0).any(-1)
    assert attrs_only.sum() > 20 and text_only.sum() > 20
    assert bool(((view == 0) | (view == tokens)).all())


def test_hashing_is_stable_and_in_range() -> None:
    assert hash_token("class=Comedy", "attr", 100) == hash_token("class=Comedy", "attr", 100)
    assert all(1 <= hash_token(f"t{i}", "attr", 7) <= 7 for i in range(100))
    assert text_tokens("Toy Story") == [
        "w:toy", "w:story", "g:#to", "g:toy", "g:oy#", "g:#st", "g:sto", "g:tor", "g:ory",
        "g:ry#",
    ]  # fmt: skip


def test_profile_tokens_bucket_age_and_zip() -> None:
    assert profile_tokens(["age=24", "zip_code=85711", "gender=M", "age=a3"]) == [
        "age=1",  # 18-24
        "zip=8",
        "gender=M",
        "age=a3",
    ]


def test_content_matrix_rows_follow_the_vocabulary() -> None:
    items = pd.DataFrame(
        {ITEM_ID: ["2", "1"], ITEM_ATTRIBUTES: [["a1"], ["a2", "a3"]], ITEM_TEXT: ["x", ""]}
    )
    vocab = Vocabulary.build(["1", "2", "3"])
    cfg = ContentConfig(max_attrs=2, text_tokens=3, attr_buckets=50, text_buckets=50)
    out = content_matrix(items, vocab, cfg)
    assert out.shape == (4, 5)
    assert out[1, :2].tolist() == [hash_token("a2", "attr", 50), hash_token("a3", "attr", 50)]
    assert out[2, 0] == hash_token("a1", "attr", 50) and out[2, 2] > 0
    assert not out[[0, 3]].any()  # PAD and the item without content


def test_user_profiles_are_required_for_zero_shot() -> None:
    users = pd.DataFrame({USER_ID: ["1"], USER_ATTRIBUTES: [[]]})
    with pytest.raises(DataValidationError, match="every profile is empty"):
        user_profile_matrix(users, ["1"], ZeroShotConfig())
    ok = pd.DataFrame({USER_ID: ["1", "2"], USER_ATTRIBUTES: [["gender=F"], []]})
    out = user_profile_matrix(ok, ["2", "1"], ZeroShotConfig(max_profile_tokens=2))
    assert out[0].tolist() == [0, 0] and out[1, 0] > 0


def _tower(use_id: bool = True) -> ContentItemTower:
    cfg = ContentConfig(max_attrs=2, text_tokens=2, attr_buckets=10, text_buckets=10)
    content = torch.tensor([[0, 0, 0, 0], [1, 2, 3, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    cfg = cfg.model_copy(update={"use_id": use_id})
    return ContentItemTower(3, 4, content, cfg)


def test_content_tower_pads_and_gives_the_id_only_to_known_items() -> None:
    tower = _tower().eval()
    tower.set_known_items(torch.tensor([0, 5, 0, 1]))
    vecs = tower.all_items()
    assert vecs.shape == (4, 4)
    assert torch.equal(vecs[0], torch.zeros(4))  # PAD
    assert torch.allclose(vecs[2], tower.content_vectors(tower.item_attributes[2]))  # cold
    id_part = vecs[1] - tower.content_vectors(tower.item_attributes[1])
    assert torch.allclose(id_part, tower.embedding.weight[1])
    assert torch.equal(vecs[3], tower.embedding.weight[3].detach())  # no content, has an id


def test_content_tower_refuses_a_bad_matrix() -> None:
    cfg = ContentConfig(max_attrs=2, text_tokens=2, attr_buckets=10, text_buckets=10)
    with pytest.raises(DataValidationError, match="shape"):
        ContentItemTower(3, 4, torch.zeros(4, 3, dtype=torch.long), cfg)
    with pytest.raises(DataValidationError, match="attribute tokens outside"):
        ContentItemTower(3, 4, torch.full((4, 4), 11), cfg)


def test_config_rules_for_cold_start() -> None:
    with pytest.raises(ConfigError, match="item_tower=content"):
        load(None, ["pretrain.epochs=2"])
    with pytest.raises(ConfigError, match="causal_targets=prefixes"):
        load(None, ["model.zero_shot.enabled=true"])
    cfg = load(None, ["model.name=mind", "model.item_tower=content", "pretrain.epochs=1"])
    assert cfg.model.content.id_dropout == 0.5 and np.isclose(cfg.pretrain.temperature, 0.05)
    with pytest.raises(ConfigError, match="refit_token_drops"):
        load(None, ["model.zero_shot.refit_token_drops=[0.5, 1.0]"])
    with pytest.raises(ConfigError, match="blends"):
        load(None, ["model.zero_shot.blends=[0.5, 1.5]"])
    with pytest.raises(ConfigError, match="blend_history"):
        load(None, ["model.zero_shot.blend_history=[0, 3]"])
    zs = load(None, ["model.zero_shot.blends=[]", "model.zero_shot.blend_history=[]"])
    assert zs.model.zero_shot.blends == () and zs.model.zero_shot.refit_chunks == 5


def test_content_tower_starts_as_the_attribute_sum_plus_the_text_mean() -> None:
    cfg = ContentConfig(max_attrs=2, text_tokens=2, attr_buckets=10, text_buckets=10)
    tokens = torch.tensor([[0, 0, 0, 0], [1, 2, 3, 4], [5, 0, 6, 0]])
    tower = ContentItemTower(2, 4, tokens, cfg).eval()
    a, t = tower.attr_table.weight, tower.text_table.weight
    vecs = tower.content_vectors(tokens)
    assert torch.allclose(vecs[1], a[1] + a[2] + (t[3] + t[4]) / 2)  # summed attributes
    assert torch.allclose(vecs[2], a[5] + t[6])
    assert torch.equal(vecs[0], torch.zeros(4))


def test_virtual_rank_losses_match_hand_computed_values() -> None:
    virtual = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # K = 2
    items = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    scores = torch.tensor([1.0, 2.0, 2.0])  # max over interests of items 1..3
    logz = math.log(scores.exp().sum())
    assert math.isclose(
        float(virtual_rank_loss(virtual, items, torch.tensor([2]))), logz - 2.0, rel_tol=1e-6
    )
    hot = torch.tensor([[1.0, 1.0, 0.0, 1.0]])  # the PAD column is ignored
    want = logz - (1.0 + 2.0) / 2
    assert math.isclose(float(user_rank_loss(virtual, items, hot)), want, rel_tol=1e-6)


def test_zero_shot_refit_changes_only_the_zero_shot_tower() -> None:
    cfg = load(None, ["model.name=comirec_sa", "model.dim=8", "model.num_interests=2",
                      "model.zero_shot.enabled=true", "model.zero_shot.hidden=16"])  # fmt: skip
    model = attach_zero_shot(cfg.model, build_model(cfg.model, 12, None, 10))
    tower = zero_shot_tower(model)
    ranking = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("zero")}
    seqs = [torch.tensor([1, 2, 3]), torch.tensor([4, 5]), torch.tensor([6, 7, 8, 9])]
    profiles = torch.tensor([[1, 2], [3, 0], [1, 4]])
    targets = RefitTargets.of(model, seqs, 10)
    losses = fit_zero_shot(tower, targets, profiles, epochs=30, lr=1e-2)
    assert losses[-1] < losses[0]
    for k, v in model.state_dict().items():
        if k in ranking:
            assert torch.equal(v, ranking[k]), k


def _toy_cold_users(num_users: int, seed: int) -> tuple[dict[int, EvalData], np.ndarray]:
    """Toy validation cold users (12 items) at h = 0, 1, 3 and their profiles [U, 2]."""
    rng = np.random.default_rng(seed)
    seqs = [rng.choice(np.arange(1, 13), size=6, replace=False) for _ in range(num_users)]
    users = [str(u) for u in range(num_users)]
    return cut_at_lengths(users, seqs, (0, 1, 3)), rng.integers(1, 8, size=(num_users, 2))


def test_refit_and_choose_keeps_the_best_state_and_returns_the_chosen_blend() -> None:
    cfg = load(None, ["model.name=comirec_sa", "model.dim=8", "model.num_interests=2",
                      "model.zero_shot.enabled=true", "model.zero_shot.hidden=16",
                      "model.zero_shot.refit_token_drops=[0.0]", "model.zero_shot.refit_chunks=2",
                      "model.zero_shot.refit_chunk_epochs=3", "data.max_len=10",
                      "model.zero_shot.blends=[0.25, 1.0]", "eval.metric=recall@5"])  # fmt: skip
    model = attach_zero_shot(cfg.model, build_model(cfg.model, 12, None, 10))
    train_rows, train_profiles = _toy_cold_users(20, 0)
    train = TrainData(train_rows[0].user_ids, train_rows[0].targets)
    valid, valid_profiles = _toy_cold_users(10, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    choice = refit_and_choose(model, cfg, train, train_profiles, valid, valid_profiles)
    assert set(choice.refit_curve) == {CO_TRAINED, "drop 0.0, 3 epochs", "drop 0.0, 6 epochs"}
    assert choice.refit_curve[choice.refit] == max(choice.refit_curve.values())
    kept = (0.0, 0) if choice.refit == CO_TRAINED else (0.0, int(choice.refit.split()[2]))
    assert (choice.token_drop, choice.refit_epochs) == kept
    assert choice.blend_curve[str(choice.blend)] == max(choice.blend_curve.values())
    assert choice.cfg.model.zero_shot.blend == choice.blend and cfg.model.zero_shot.blend == 0.5
    moved = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert all(k.startswith("zero_shot.") for k in moved)
    assert bool(moved) == (choice.refit != CO_TRAINED)
    assert choice.metrics()["zero_shot/valid_h0/recall@5"] == choice.refit_curve[choice.refit]
    assert choice.summary()["refit"]["chosen"] == choice.refit


def test_refit_runs_round_robin_and_stops_at_its_cap() -> None:
    base = ["model.name=comirec_sa", "model.dim=8", "model.num_interests=2",
            "model.zero_shot.enabled=true", "model.zero_shot.hidden=16",
            "model.zero_shot.refit_token_drops=[0.0, 0.5]", "model.zero_shot.refit_chunks=2",
            "model.zero_shot.refit_chunk_epochs=2", "data.max_len=10",
            "model.zero_shot.blends=[]", "eval.metric=recall@5"]  # fmt: skip
    train_rows, train_profiles = _toy_cold_users(20, 0)
    train = TrainData(train_rows[0].user_ids, train_rows[0].targets)
    valid, valid_profiles = _toy_cold_users(10, 1)
    full_cfg = load(None, base)
    full_model = attach_zero_shot(full_cfg.model, build_model(full_cfg.model, 12, None, 10))
    full = refit_and_choose(full_model, full_cfg, train, train_profiles, valid, valid_profiles)
    assert list(full.refit_curve) == [CO_TRAINED, "drop 0.0, 2 epochs", "drop 0.5, 2 epochs",
                                      "drop 0.0, 4 epochs", "drop 0.5, 4 epochs"]  # fmt: skip
    assert full.summary()["refit"]["complete"] is True
    capped_cfg = load(None, [*base, "model.zero_shot.refit_max_minutes=1e-9"])
    model = attach_zero_shot(capped_cfg.model, build_model(capped_cfg.model, 12, None, 10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    capped = refit_and_choose(model, capped_cfg, train, train_profiles, valid, valid_profiles)
    assert list(capped.refit_curve) == [CO_TRAINED] and capped.refit == CO_TRAINED
    assert capped.summary()["refit"]["complete"] is False
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_rescale_content_scales_every_content_vector_exactly() -> None:
    cfg = ContentConfig(max_attrs=2, text_tokens=2, attr_buckets=10, text_buckets=10)
    tokens = torch.tensor([[0, 0, 0, 0], [1, 2, 3, 4], [5, 0, 6, 0], [0, 0, 7, 0]])
    tower = ContentItemTower(3, 4, tokens, cfg).eval()
    torch.nn.init.normal_(tower.mix[-1].weight)  # a trained, non-zero mix
    before = tower.content_vectors(tokens).detach()
    rescale_content(tower, 3.0)
    assert torch.allclose(tower.content_vectors(tokens), 3.0 * before, atol=1e-6)


def test_pretraining_ends_at_the_norm_it_started_with() -> None:
    cfg = ContentConfig(max_attrs=2, text_tokens=2, attr_buckets=10, text_buckets=10)
    tokens = torch.tensor([[0, 0, 0, 0], [1, 2, 3, 4], [5, 0, 6, 0], [1, 5, 7, 0], [2, 0, 8, 9]])
    tower = ContentItemTower(4, 4, tokens, cfg)
    items = torch.arange(1, 5)
    start = mean_content_norm(tower, items)
    pretrain = PretrainConfig(epochs=20, batch_size=4, lr=0.05)
    pretrain_content_tower(tower, items, pretrain, seed=0)
    assert math.isclose(mean_content_norm(tower, items), start, rel_tol=1e-4)
