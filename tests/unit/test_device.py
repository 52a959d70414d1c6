"""Training device and process-group backend: CPU by default, a GPU per rank when configured."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from mirec.config import load
from mirec.data.batches import SeqBatch
from mirec.errors import ConfigError
from mirec.training.device import (
    move_batch,
    new_generator,
    process_group_backend,
    resolve_device,
    rng_state,
    set_rng_state,
)

CPU = torch.device("cpu")


def test_cpu_is_the_default_and_ignores_visible_gpus() -> None:
    assert load(None, []).optim.device == "cpu"
    assert resolve_device("cpu", local_rank=1, local_world=2, visible=8) == CPU
    assert process_group_backend(CPU) == "gloo"


def test_cuda_gives_each_rank_its_own_gpu_and_nccl() -> None:
    device = resolve_device("cuda", local_rank=1, local_world=2, visible=2)
    assert device == torch.device("cuda", 1)
    assert process_group_backend(device) == "nccl"


@pytest.mark.parametrize(("rank", "world", "visible"), [(0, 1, 0), (1, 2, 1), (0, 4, 2)])
def test_cuda_without_a_gpu_per_process_is_refused(rank: int, world: int, visible: int) -> None:
    with pytest.raises(ConfigError, match=rf"{world} process\(es\), {visible} CUDA device"):
        resolve_device("cuda", local_rank=rank, local_world=world, visible=visible)


def test_auto_uses_gpus_only_when_every_rank_gets_one() -> None:
    assert resolve_device("auto", local_rank=0, local_world=1, visible=1) == torch.device("cuda", 0)
    assert resolve_device("auto", local_rank=1, local_world=2, visible=1) == CPU
    assert resolve_device("auto", local_rank=0, local_world=1, visible=0) == CPU


def test_unknown_device_setting_is_named() -> None:
    with pytest.raises(ConfigError, match="optim.device"):
        resolve_device("tpu")
    with pytest.raises(ConfigError, match="optim.device"):
        load(None, ["optim.device=gpu"])


def test_move_batch_keeps_a_batch_already_there() -> None:
    batch = SeqBatch(torch.ones(2, 3, dtype=torch.long), torch.tensor([3, 3]), torch.ones(2).long())
    assert move_batch(batch, CPU) is batch


def test_random_states_round_trip() -> None:
    generator = new_generator(5, CPU)
    saved = rng_state(generator, CPU)
    first = (
        random.random(),
        np.random.rand(),
        torch.rand(1).item(),
        torch.rand(1, generator=generator).item(),
    )
    set_rng_state(saved, generator, CPU)
    again = (
        random.random(),
        np.random.rand(),
        torch.rand(1).item(),
        torch.rand(1, generator=generator).item(),
    )
    assert first == again
