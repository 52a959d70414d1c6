"""The retraining pipeline's KFP parameters, validated before anything is submitted or run."""

from __future__ import annotations

from typing import Any

from mirec.errors import ConfigError


def _drop_default_nones(tree: dict[str, Any], defaults: dict[str, Any], prefix: str) -> None:
    for key in list(tree):
        value, default = tree[key], defaults.get(key)
        if isinstance(value, dict):
            _drop_default_nones(
                value, default if isinstance(default, dict) else {}, f"{prefix}{key}."
            )
        elif value is None:
            if default is not None:
                raise ConfigError(
                    f"config key {prefix + key!r} is null, which a KFP parameter cannot carry; "
                    f"give it a value (default {default!r})"
                )
            del tree[key]


def kfp_config_tree(tree: dict[str, Any]) -> dict[str, Any]:
    """The resolved config as a KFP ``dict`` parameter: validated, nulls that are defaults left out.

    KFP parameters travel as protobuf Structs, which hold no nulls (and turn ints into floats,
    which the components' ``mirec.config.from_dict`` turns back).

    Raises:
        ConfigError: an unknown key or bad value, or a null where the default is not null.
    """
    from mirec.config import TrainConfig, from_dict

    resolved = from_dict(tree).model_dump(mode="json")
    _drop_default_nones(resolved, TrainConfig().model_dump(mode="json"), "")
    return resolved


def pipeline_arguments(
    source: str,
    registry_root: str,
    train_config: dict[str, Any],
    *,
    num_workers: int = 1,
    max_bad_fraction: float | None = None,
    feature_store: dict[str, str] | None = None,
    columns: str = "",
) -> dict[str, Any]:
    """The retraining pipeline's parameters (the resolved config tree validates first).

    Args:
        source, registry_root, train_config, num_workers, feature_store: as the pipeline's.
        max_bad_fraction: overrides the config's ``data.max_bad_fraction`` (the one place its
            value lives) in both the validation step and the config tree; None keeps it.
        columns: column mapping of a table source (``mirec.data.columns.parse_columns``).

    Raises:
        ConfigError: the config tree has an unknown key or a bad value, or a bad mapping.
    """
    from mirec.data.columns import parse_columns
    from mirec.pipeline.data import store_settings

    if max_bad_fraction is not None:
        data = {**train_config.get("data", {}), "max_bad_fraction": max_bad_fraction}
        train_config = {**train_config, "data": data}
    resolved = kfp_config_tree(train_config)
    parse_columns(columns)  # a bad mapping fails here, not in the cluster
    store_settings(feature_store)  # unknown keys fail here, not in the cluster
    if num_workers < 1:
        raise ConfigError(f"num_workers must be >= 1, got {num_workers}")
    return {
        "source": str(source),
        "registry_root": str(registry_root),
        "train_config": resolved,
        "num_workers": int(num_workers),
        "max_bad_fraction": float(resolved["data"]["max_bad_fraction"]),
        "feature_store": dict(feature_store or {}),
        "columns": str(columns),
    }
