"""Typed, frozen configuration: defaults in code, then YAML, then ``a.b=c`` overrides.

Unknown keys are errors that name the key. The resolved config is dumped with every run and
into every bundle (``TrainConfig.model_dump()``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mirec.errors import ConfigError
from mirec.schema import DEFAULT_MAX_LEN

RANKING_METRICS = ("hr", "recall", "ndcg")  # metric keys are "<name>@<k>", k in eval.ks
ATTENTION_MODELS = frozenset({"sasrec"})  # towers whose attention heads split model.dim


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(_Frozen):
    """How events become training and evaluation examples."""

    protocol: Literal["A", "B"] = "B"  # A: ComiRec user split; B: leave-one-out
    max_len: int = Field(DEFAULT_MAX_LEN, ge=1)
    split_seed: int = 1230  # protocol A: seeded hash of the user id
    valid_fraction: float = Field(0.1, gt=0, lt=0.5)  # protocol A
    test_fraction: float = Field(0.1, gt=0, lt=0.5)  # protocol A
    history_fraction: float = Field(0.8, gt=0, lt=1)  # protocol A: share of events that is history
    max_bad_fraction: float = Field(0.01, ge=0, le=1)  # load fails above this share of bad rows


class ContentConfig(_Frozen):
    """Content item tower (``model.item_tower: content``): hashed attribute and text bags."""

    use_id: bool = True  # add the id embedding of items seen in training (a cold item lacks it)
    id_dropout: float = Field(0.5, ge=0, lt=1)  # training: share of items whose id is dropped
    max_attrs: int = Field(8, ge=1)  # attribute tokens kept per item
    attr_buckets: int = Field(16384, ge=1)  # hashed attribute vocabulary
    text_tokens: int = Field(24, ge=0)  # hashed word + char-trigram tokens per item text
    text_buckets: int = Field(16384, ge=1)


class ZeroShotConfig(_Frozen):
    """MAIL zero-shot user tower: user profile -> the user tower's interest vectors."""

    enabled: bool = False
    hidden: int = Field(256, ge=1)  # width of the dual auto-encoders' shared latent
    profile_buckets: int = Field(4096, ge=1)  # hashed profile-token vocabulary
    max_profile_tokens: int = Field(16, ge=1)
    lr: float = Field(5e-4, gt=0)  # its own Adam (MAIL: half the ranking tower's rate)
    max_history: int = Field(5, ge=0)  # users with 1..max_history events get the blend
    blend: float = Field(0.5, ge=0, le=1)  # weight of the zero-shot vectors in the blend
    # after training (mirec.training.zero_shot), on the validation users: refit the zero-shot
    # tower on the frozen ranking tower, from its co-trained state, for each share of hidden
    # profile tokens in chunks of epochs; keep the best state at 0 events, then choose the blend
    refit_token_drops: tuple[float, ...] = (0.0, 0.5, 0.75, 0.9)
    refit_chunk_epochs: int = Field(10, ge=1)  # validated after every chunk
    refit_chunks: int = Field(5, ge=0)  # chunks per token share; 0: keep the co-trained state
    refit_lr: float = Field(2e-3, gt=0)
    # wall-clock cap of the refit (None: the whole grid; optim.max_minutes bounds the ranking
    # tower's training, not this); chunks run round-robin over the token shares, so a cap
    # cuts every share at about the same number of epochs
    refit_max_minutes: float | None = Field(None, gt=0)
    blends: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 1.0)  # candidates; empty: keep blend
    blend_history: tuple[int, ...] = (1, 3)  # validation history lengths the blend is chosen on

    @model_validator(mode="after")
    def _check_choice(self) -> ZeroShotConfig:
        if any(not 0 <= d < 1 for d in self.refit_token_drops):
            raise ValueError(
                f"model.zero_shot.refit_token_drops must be in [0, 1), got "
                f"{list(self.refit_token_drops)}"
            )
        if any(not 0 <= w <= 1 for w in self.blends):
            raise ValueError(f"model.zero_shot.blends must be in [0, 1], got {list(self.blends)}")
        if self.blends and (not self.blend_history or min(self.blend_history) < 1):
            raise ValueError(
                "model.zero_shot.blend_history needs history lengths >= 1, got "
                f"{list(self.blend_history)}"
            )
        return self


class ModelConfig(_Frozen):
    """Tower architecture."""

    # popularity / itemknn: the non-neural floors, fitted from counts (mirec.models.baselines)
    name: Literal[
        "sasrec", "comirec_sa", "comirec_dr", "mind", "multi_tower", "popularity", "itemknn"
    ] = "sasrec"
    # multi_tower: item tower -> num_layers bidirectional blocks -> this multi-interest extractor
    extractor: Literal["comirec_sa", "comirec_dr", "mind"] = "comirec_sa"
    num_intents: int = Field(0, ge=0)  # ELCRec: learnable intent centres (0 = none; >= 2 else)
    dim: int = Field(64, ge=1)
    num_interests: int = Field(4, ge=1)  # forced to 1 for sasrec
    num_layers: int = Field(2, ge=0)
    num_heads: int = Field(2, ge=1)
    ffn_dim: int = Field(256, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    routing_iters: int = Field(3, ge=1)
    use_attributes: bool = False  # item tower adds pooled attribute embeddings (attribute_pool)
    norm: Literal["pre", "pre_in", "post"] = "pre"  # SASRec: pre-LN (+ input LN) or post-LN
    linear_init: Literal["torch", "normal"] = "torch"  # user tower Linears: torch's or N(0, .02)
    attribute_pool: Literal["mean", "sum"] = "mean"  # item tower: how attribute tokens combine
    item_tower: Literal["id", "content"] = "id"  # content: mirec.models.content_tower
    content: ContentConfig = ContentConfig()
    zero_shot: ZeroShotConfig = ZeroShotConfig()

    @property
    def interests(self) -> int:
        """K, the number of interest vectors the user tower returns."""
        return 1 if self.name in ("sasrec", "popularity", "itemknn") else self.num_interests


class AuxiliaryConfig(_Frozen):
    """Weights of the auxiliary objective terms (``mirec.objectives``); 0 switches one off."""

    repel: float = Field(0.0, ge=0)  # cosine repel between a user's K interest vectors
    routing: float = Field(0.0, ge=0)  # REMI routing regularisation (needs a routing matrix)
    clustering: float = Field(0.0, ge=0)  # ELCRec centre separation + behaviour alignment
    contrastive: float = Field(0.0, ge=0)  # ELCRec intent-assisted contrastive learning


class IntentConfig(_Frozen):
    """ELCRec: when the centres start, and the contrastive views."""

    warmup_epochs: int = Field(1, ge=0)  # k-means on the user vectors before this epoch
    temperature: float = Field(0.5, gt=0)  # NT-Xent temperature (cosine similarities)
    fusion: Literal["none", "shift"] = "shift"  # add the view's nearest centre before CL
    crop: float = Field(0.2, gt=0, le=1)  # crop keeps this share of the history
    mask: float = Field(0.7, ge=0, lt=1)  # mask removes this share of the items
    reorder: float = Field(0.2, ge=0, le=1)  # reorder shuffles a span of this share


class LossConfig(_Frozen):
    """Training objective."""

    kind: Literal["full_softmax", "full_softmax_ihn", "sampled_softmax", "sampled_softmax_ihn"] = (
        "full_softmax"
    )
    sampler: Literal["uniform", "popularity", "log_uniform", "in_batch"] = "popularity"
    num_negatives: int | None = Field(None, ge=1)  # default 10 x batch size (ComiRec)
    logq_correction: bool = True
    remove_accidental_hits: bool = True
    readout: Literal["max", "target_aware", "logsumexp"] = "max"
    readout_temperature: float = Field(1.0, gt=0)  # logsumexp: tau * logsumexp_k(s_k / tau)
    temperature: float = Field(1.0, gt=0)
    ihn_beta: float = Field(1.0, ge=0)  # *_softmax_ihn: hardness tilt (0 = no tilt)
    repel_margin: float = Field(0.0, ge=-1, lt=1)  # repel: cosines above it are penalised
    auxiliary: AuxiliaryConfig = AuxiliaryConfig()  # weights of the auxiliary terms
    intents: IntentConfig = IntentConfig()  # ELCRec clustering and contrastive settings
    # causal towers (SASRec): a loss at every position of each sequence (one row per user), or
    # one row per prefix scored at its newest item, as serving scores (~8x the tower's work)
    causal_targets: Literal["all_positions", "prefixes"] = "all_positions"
    # dtype of the full-softmax logits matmuls: bfloat16 is faster on CPUs with AVX512-BF16 or
    # AMX and ~8x slower without them; auto picks bfloat16 only where the CPU has those units
    matmul_dtype: Literal["float32", "bfloat16", "auto"] = "float32"


class OptimConfig(_Frozen):
    """Optimiser and schedule."""

    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)  # AdamW decoupled decay (linear-layer matrices)
    embedding_weight_decay: float | None = Field(None, ge=0)  # None: same as weight_decay
    norm_bias_weight_decay: float | None = Field(None, ge=0)  # None: same as weight_decay
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    # the decay's length: max_epochs, or the epochs that fit in max_minutes (refitted after each
    # epoch at the mean pace so far; training then ends with the schedule)
    schedule_horizon: Literal["max_epochs", "budget"] = "max_epochs"
    warmup_epochs: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)  # the decayed schedule's floor, x lr
    ema_decay: float | None = Field(None, gt=0, lt=1)  # validate and ship a weight average
    batch_size: int = Field(256, ge=1)
    max_epochs: int = Field(50, ge=1)
    patience: int = Field(5, ge=1)  # epochs without validation improvement
    # wall-clock budget of the training loop (epochs and their validation): no epoch starts
    # that would end past it at the pace so far
    max_minutes: float | None = Field(None, gt=0)
    grad_clip: float | None = Field(5.0, gt=0)
    num_threads: int | None = Field(None, ge=1)
    # where training runs: cpu (default, the tested path); cuda (rank r on cuda:r, one GPU per
    # process, nccl for DDP); auto (cuda when every process gets a GPU, else cpu)
    device: Literal["cpu", "cuda", "auto"] = "cpu"


class EvalConfig(_Frozen):
    """Full-ranking evaluation."""

    ks: tuple[int, ...] = (5, 10, 20, 50)
    metric: str = "ndcg@10"  # validation metric for early stopping and model selection
    ndcg_variant: Literal["standard", "comirec"] = "standard"
    history_score: Literal["-inf", "zero"] = "-inf"  # zero = ICLRec/ELCRec reference code
    batch_size: int = Field(512, ge=1)

    @model_validator(mode="after")
    def _check_ks(self) -> EvalConfig:
        if not self.ks or min(self.ks) < 1 or len(set(self.ks)) != len(self.ks):
            raise ValueError(f"eval.ks must be distinct positive cut-offs, got {list(self.ks)}")
        return self


def _check_metric(key: str, name: str, ks: tuple[int, ...]) -> None:
    """A metric key is ``<name>@<k>`` with a ranking metric name and a k in ``eval.ks``."""
    kind, sep, k = name.partition("@")
    if kind not in RANKING_METRICS or not sep:
        allowed = ", ".join(f"{m}@K" for m in RANKING_METRICS)
        raise ValueError(f"{key} {name!r} is not a metric; allowed: {allowed}")
    if not k.isdigit() or int(k) not in ks:
        allowed = ", ".join(f"{kind}@{cut}" for cut in ks)
        raise ValueError(
            f"{key} {name!r}: {k!r} is not one of eval.ks {list(ks)}; allowed: {allowed}"
        )


class IndexConfig(_Frozen):
    """faiss index choice for serving."""

    kind: Literal["auto", "flat", "hnsw", "ivf"] = "auto"
    exact_below: int = Field(100_000, ge=1)
    hnsw_m: int = Field(32, ge=4)
    hnsw_ef_search: int = Field(64, ge=1)
    ivf_nlist: int | None = Field(None, ge=1)
    ivf_nprobe: int = Field(16, ge=1)
    min_recall: float = Field(0.95, ge=0, le=1)
    recall_k: int = Field(50, ge=1)


class GateConfig(_Frozen):
    """Deploy gate: absolute thresholds and the allowed regression against production."""

    metric: str = "recall@20"  # the one metric key the gate compares
    min_value: float = Field(0.0, ge=0)  # absolute threshold on the metric
    max_regression: float = Field(0.01, ge=0)  # allowed absolute drop below production


class PretrainConfig(_Frozen):
    """Multi-view contrastive pretraining of the content item tower before fine-tuning."""

    epochs: int = Field(0, ge=0)  # 0: no pretraining
    temperature: float = Field(0.05, gt=0)  # InfoNCE over cosine similarities (MMSRec)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(512, ge=2)  # items per batch; the other items are the negatives
    token_keep: float = Field(0.5, gt=0, le=1)  # chance that a view keeps each content token


class TrainConfig(_Frozen):
    """Everything one training run needs."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    eval: EvalConfig = EvalConfig()
    index: IndexConfig = IndexConfig()
    gate: GateConfig = GateConfig()
    pretrain: PretrainConfig = PretrainConfig()
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        _check_metric("eval.metric", self.eval.metric, self.eval.ks)
        _check_metric("gate.metric", self.gate.metric, self.eval.ks)
        if self.optim.schedule_horizon == "budget" and self.optim.max_minutes is None:
            raise ValueError("optim.schedule_horizon=budget needs optim.max_minutes")
        if self.pretrain.epochs and self.model.item_tower != "content":
            raise ValueError("pretrain.epochs > 0 needs model.item_tower=content")
        causal_rows = self.model.name == "sasrec" and self.loss.causal_targets == "all_positions"
        if self.model.zero_shot.enabled and causal_rows:
            raise ValueError("model.zero_shot needs per-user rows: loss.causal_targets=prefixes")
        if self._heads_split_dim() and self.model.dim % self.model.num_heads:
            raise ValueError(
                f"model.dim {self.model.dim} is not divisible by model.num_heads "
                f"{self.model.num_heads} ({self.model.name} splits dim across its heads)"
            )
        return self

    def _heads_split_dim(self) -> bool:
        return self.model.name in ATTENTION_MODELS and self.model.num_layers > 0

    @property
    def num_negatives(self) -> int:
        """Negatives per batch for sampled softmax (default 10 x batch size)."""
        return self.loss.num_negatives or 10 * self.optim.batch_size


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form a.b=value")
    key, raw = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def _check_keys(tree: dict[str, Any], model: type[BaseModel], prefix: str = "") -> None:
    for key, value in tree.items():
        field = model.model_fields.get(key)
        if field is None:
            raise ConfigError(f"unknown config key {prefix + key!r}")
        sub = field.annotation
        if isinstance(value, dict) and isinstance(sub, type) and issubclass(sub, BaseModel):
            _check_keys(value, sub, prefix + key + ".")


def load(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> TrainConfig:
    """Load a config: code defaults, then the YAML file, then ``a.b=c`` overrides.

    Args:
        path: a YAML file, or None for the defaults.
        overrides: ``section.key=value`` strings; values are parsed as YAML scalars.

    Returns:
        The resolved, frozen config.

    Raises:
        ConfigError: unknown key, unreadable file or invalid value, with the key named.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config {path} must be a mapping at the top level")
        tree = loaded
    for text in overrides:
        keys, value = _parse_override(text)
        node = tree
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {key!r} is not a section")
        node[keys[-1]] = value
    return from_dict(tree)


def from_dict(tree: dict[str, Any]) -> TrainConfig:
    """Validate a (possibly partial) config tree, naming the first bad key."""
    _check_keys(tree, TrainConfig)
    try:
        return TrainConfig.model_validate(tree)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        if first["type"] == "value_error":  # a cross-field rule: its message names the keys
            raise ConfigError(str(first["ctx"]["error"])) from exc
        raise ConfigError(f"config key {key!r}: {first['msg']}") from exc
