"""Tower shapes, empty and short histories, padding invariance, causality and the registry."""

from __future__ import annotations

import pytest
import torch

from mirec.config import ContentConfig, ModelConfig
from mirec.data.batches import SeqBatch, pad_left
from mirec.errors import ConfigError, DataValidationError
from mirec.models import MODELS, build_model
from mirec.models.comirec import dynamic_routing
from mirec.models.common import squash
from mirec.models.item_tower import ItemTower

torch.set_num_threads(1)
NUM_ITEMS = 30
HISTORIES = [[3, 7, 1, 9, 4], [], [5], [2, 2, 8]]


def _batch(histories: list[list[int]], max_len: int = 20, width: int | None = None) -> SeqBatch:
    ids = pad_left(histories, max_len)
    if width is not None and width > ids.shape[1]:
        ids = torch.cat(
            [torch.zeros(len(histories), width - ids.shape[1], dtype=torch.long), ids], 1
        )
    lengths = torch.tensor([len(h) for h in histories])
    return SeqBatch(ids, lengths, torch.ones(len(histories), dtype=torch.long))


def _model(name: str, seed: int = 0, **kw: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(
        ModelConfig(name=name, dim=16, num_heads=2, ffn_dim=32, **kw), NUM_ITEMS, max_len=20
    )


def test_registry_is_explicit() -> None:
    assert set(MODELS) == {"sasrec", "comirec_sa", "comirec_dr", "mind", "multi_tower"}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("training", [False, True])
def test_shapes_and_no_nan_with_empty_and_length_one_rows(name: str, training: bool) -> None:
    model = _model(name)
    model.train(training)
    vecs = model.user_vectors(_batch(HISTORIES))
    k = 1 if name == "sasrec" else 4
    assert vecs.shape == (len(HISTORIES), k, 16)
    assert torch.isfinite(vecs).all()
    scores = model.score_all(_batch(HISTORIES))
    assert scores.shape == (len(HISTORIES), NUM_ITEMS + 1)
    assert torch.isfinite(scores).all()
    assert model.num_interests == k
    vecs.sum().backward()  # gradients flow and stay finite
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_extra_left_padding_does_not_change_outputs(name: str) -> None:
    model = _model(name).eval()
    with torch.no_grad():
        tight = model.user_vectors(_batch(HISTORIES))
        wide = model.user_vectors(_batch(HISTORIES, width=17))
    assert torch.allclose(tight, wide, atol=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_score_all_is_max_over_interests(name: str) -> None:
    model = _model(name).eval()
    batch = _batch(HISTORIES)
    with torch.no_grad():
        expected = torch.einsum("bkd,nd->bkn", model.user_vectors(batch), model.item_vectors())
        assert torch.allclose(model.score_all(batch), expected.max(1).values, atol=1e-5)


@pytest.mark.parametrize("norm", ["pre", "pre_in", "post"])
def test_sasrec_is_causal(norm: str) -> None:
    model = _model("sasrec", norm=norm).eval()
    a = _batch([[3, 7, 1, 9, 4]])
    b = _batch([[3, 7, 1, 12, 25]])  # the last two items differ
    with torch.no_grad():
        sa, sb = model.sequence_states(a), model.sequence_states(b)
    assert sa.shape == (1, 5, 16)
    assert torch.allclose(sa[:, :3], sb[:, :3], atol=1e-6)
    assert not torch.allclose(sa[:, 3:], sb[:, 3:], atol=1e-3)
    assert torch.allclose(model.user_vectors(a)[:, 0], sa[:, -1])


def test_sasrec_post_norm_is_padding_invariant_and_differs_from_pre() -> None:
    post = _model("sasrec", norm="post").eval()
    pre = _model("sasrec", norm="pre").eval()  # same seed: same weights, other block layout
    with torch.no_grad():
        tight = post.user_vectors(_batch(HISTORIES))
        wide = post.user_vectors(_batch(HISTORIES, width=17))
        assert torch.allclose(tight, wide, atol=1e-5)
        assert not torch.allclose(tight, pre.user_vectors(_batch(HISTORIES)), atol=1e-3)
    assert post.state_dict().keys() == pre.state_dict().keys()


def test_sasrec_pre_in_normalises_the_input_embeddings() -> None:
    pre_in = _model("sasrec", norm="pre_in").eval()
    pre = _model("sasrec", norm="pre").eval()  # same seed: the same weights but ln_in
    assert set(pre_in.state_dict()) - set(pre.state_dict()) == {
        "user_tower.ln_in.weight",
        "user_tower.ln_in.bias",
    }
    with torch.no_grad():
        pre_in.user_tower.item_tower.embedding.weight.mul_(10.0)  # LN undoes the input's scale
        pre.user_tower.item_tower.embedding.weight.mul_(10.0)
        wide = _batch(HISTORIES, width=17)
        assert torch.allclose(
            pre_in.user_vectors(_batch(HISTORIES)), pre_in.user_vectors(wide), atol=1e-5
        )
        assert not torch.allclose(
            pre_in.user_vectors(_batch(HISTORIES)), pre.user_vectors(_batch(HISTORIES)), atol=1e-3
        )


def test_normal_linear_init_covers_the_user_tower_only() -> None:
    content = ContentConfig(max_attrs=2, text_tokens=2, attr_buckets=10, text_buckets=10)
    tokens = torch.randint(0, 10, (NUM_ITEMS + 1, 4), generator=torch.Generator().manual_seed(1))
    towers = []
    for init in ("torch", "normal"):
        torch.manual_seed(0)
        cfg = ModelConfig(
            name="sasrec", dim=16, ffn_dim=32, linear_init=init, item_tower="content",
            content=content,
        )  # fmt: skip
        towers.append(build_model(cfg, NUM_ITEMS, item_attributes=tokens, max_len=20))
    default, normal = towers
    user = dict(normal.user_tower.blocks.named_parameters())
    weights = [p for name, p in user.items() if name.endswith("weight") and p.dim() == 2]
    biases = [p for name, p in user.items() if "ln_" not in name and name.endswith("bias")]
    assert weights and all(abs(float(p.detach().std()) - 0.02) < 0.005 for p in weights)
    assert biases and all(float(p.detach().abs().max()) == 0.0 for p in biases)
    for (name, a), b in zip(
        default.item_tower.named_parameters(), normal.item_tower.parameters(), strict=True
    ):
        assert torch.equal(a, b), name  # same seed: the item tower is untouched


def test_sasrec_refuses_unknown_norm() -> None:
    from mirec.models.sasrec import SASRec

    with pytest.raises(ConfigError, match="model.norm"):
        SASRec(ItemTower(NUM_ITEMS, 16), max_len=20, norm="sandwich")


def test_non_causal_model_has_no_sequence_states() -> None:
    with pytest.raises(ConfigError):
        _model("comirec_sa").sequence_states(_batch(HISTORIES))


def test_mind_routing_noise_only_in_training() -> None:
    model = _model("mind")
    batch = _batch(HISTORIES)
    model.train()
    assert not torch.allclose(model.user_vectors(batch), model.user_vectors(batch))
    model.eval()
    assert torch.equal(model.user_vectors(batch), model.user_vectors(batch))


def test_routing_softmax_is_over_interests() -> None:
    hat = torch.randn(2, 3, 5, 4)  # [B, K, T, D]
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, :2] = False
    out = dynamic_routing(hat, mask, torch.zeros(2, 3, 5), iterations=1)
    expected = squash((hat * mask[:, None, :, None]).sum(2) / 3)  # coupling 1/K at real positions
    assert torch.allclose(out, expected, atol=1e-6)


def test_history_wider_than_max_len_is_refused() -> None:
    with pytest.raises(ConfigError, match="max_len"):
        _model("comirec_sa").user_vectors(_batch([list(range(1, 26))], max_len=25))


def test_attribute_item_tower() -> None:
    attrs = torch.zeros(NUM_ITEMS + 1, 3, dtype=torch.long)
    attrs[1:, 0] = torch.arange(NUM_ITEMS) % 4 + 1
    attrs[1:5, 1] = 6
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(name="comirec_sa", dim=8, use_attributes=True), NUM_ITEMS, attrs
    )
    tower = model.item_tower
    items = tower.all_items()
    assert items.shape == (NUM_ITEMS + 1, 8)
    assert torch.allclose(items[0], torch.zeros(8))
    expected = (
        tower.embedding.weight[2]
        + (tower.attr_embedding.weight[2] + tower.attr_embedding.weight[6]) / 2
    )  # item 2: tokens 2, 6
    assert torch.allclose(tower(torch.tensor([2]))[0], expected)
    assert torch.allclose(tower(torch.tensor([[2, 7]])), items[[2, 7]].unsqueeze(0))
    assert "item_attributes" not in model.state_dict()


def test_attribute_sum_pool() -> None:
    attrs = torch.zeros(NUM_ITEMS + 1, 3, dtype=torch.long)
    attrs[2, :2] = torch.tensor([2, 6])
    torch.manual_seed(0)
    tower = ItemTower(NUM_ITEMS, 8, attrs, attribute_pool="sum")
    assert tower.attr_embedding is not None
    expected = (
        tower.embedding.weight[2] + tower.attr_embedding.weight[2] + tower.attr_embedding.weight[6]
    )
    assert torch.allclose(tower(torch.tensor([2]))[0], expected)
    assert torch.allclose(tower.all_items()[3], tower.embedding.weight[3])  # no attributes
    with pytest.raises(ConfigError, match="attribute_pool"):
        ItemTower(NUM_ITEMS, 8, attrs, attribute_pool="max")


def test_attribute_errors() -> None:
    with pytest.raises(ConfigError, match="use_attributes"):
        build_model(ModelConfig(use_attributes=True), NUM_ITEMS)
    with pytest.raises(DataValidationError, match="shape"):
        ItemTower(NUM_ITEMS, 8, torch.zeros(NUM_ITEMS, 2, dtype=torch.long))


def test_state_dict_round_trip() -> None:
    model = _model("comirec_dr").eval()
    clone = _model("comirec_dr", seed=1).eval()
    clone.load_state_dict(model.state_dict())
    batch = _batch(HISTORIES)
    assert torch.equal(model.score_all(batch), clone.score_all(batch))
