"""Sharded training through accelerate (FSDP2, DeepSpeed ZeRO-3): what checkpoints and the launcher need from it.

Under a sharding engine no process holds the whole model: each rank owns a slice of every weight and of the optimizer
state. A checkpoint therefore gathers them with the engines' own state-dict utilities (accelerate's `get_state_dict`,
torch.distributed.checkpoint's optimizer state dict), which every rank must call, and the main process writes the
full tensors in the same files an unsharded run writes. Weights are restored into the plain model before
`accelerator.prepare` shards it; the optimizer state after, each rank taking its slice.
"""

from __future__ import annotations

import contextlib
import os

import torch
from accelerate.state import PartialState
from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin, gather_object
from transformers.integrations import deepspeed

SHARDED = (DistributedType.FSDP, DistributedType.DEEPSPEED)


@contextlib.contextmanager
def whole_model_loading():
    """Load a model that no engine trains (a reward or judge classifier, a reinforced model) whole, even inside a
    DeepSpeed ZeRO-3 run: there transformers' `from_pretrained` partitions every new model across the ranks
    (`zero3_init_flag`), and a partitioned classifier called outside the engine fails ("'weight' must be 2-D")."""
    saved = deepspeed._hf_deepspeed_config_weak_ref
    deepspeed._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        deepspeed._hf_deepspeed_config_weak_ref = saved


def is_sharded(accelerator) -> bool:
    """Whether the engine splits weights or optimizer state across processes (no rank holds all of them)."""
    return accelerator.distributed_type in SHARDED


def sharding_on_cpu(accelerator) -> None:
    """Run FSDP or DeepSpeed on CPU processes joined over gloo when the launcher asked for it.

    accelerate 1.15 switches to FSDP or DeepSpeed only on GPU-like devices: with `ACCELERATE_USE_FSDP` (or
    `ACCELERATE_USE_DEEPSPEED`) set by `accelerate launch --config_file accelerate_configs/fsdp.yaml` but no GPU, it
    falls back to plain data parallelism (MULTI_CPU) without a word. torch's FSDP2 (`fully_shard`) and DeepSpeed's
    CPU accelerator both run over gloo, so this hands accelerate's state the plugin the launcher configured (from its
    environment variables), and accelerate's own preparation for that engine takes over.
    """
    wanted = [name for name in ("FSDP", "DEEPSPEED") if os.environ.get(f"ACCELERATE_USE_{name}", "").lower() == "true"]
    if not wanted or accelerator.distributed_type != DistributedType.MULTI_CPU:
        return
    state = accelerator.state
    if wanted[0] == "FSDP":
        plugin = FullyShardedDataParallelPlugin()
        if plugin.fsdp_version != 2:
            raise ValueError(
                f"fsdp_version {plugin.fsdp_version}: on CPU only FSDP2 runs (torch's FSDP1 needs a GPU); set "
                f"fsdp_version: 2 in the accelerate config."
            )
        if state.mixed_precision != "no":
            plugin.set_mixed_precision(state.mixed_precision)
        state.fsdp_plugin, state.distributed_type = plugin, DistributedType.FSDP
    else:
        import deepspeed.comm  # optional (the deepspeed extra): only a DeepSpeed run on CPU needs it

        deepspeed.comm.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)  # joins the existing group
        plugin = DeepSpeedPlugin()
        plugin.set_mixed_precision(state.mixed_precision)
        plugin.select(_from_accelerator_state=True)
        state.deepspeed_plugins, state.distributed_type = plugin, DistributedType.DEEPSPEED
    # as accelerate itself does once it has chosen an engine: later AcceleratorState() calls copy PartialState's
    PartialState._shared_state["distributed_type"] = state.distributed_type


def torch_optimizer(optimizer):
    """The torch optimizer inside accelerate's wrapper (and inside DeepSpeed's ZeRO optimizer, which holds the
    flattened partitions it updates): what a learning-rate schedule drives."""
    while not isinstance(optimizer, torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer


def full_model_state(trainer) -> dict:
    """The policy's full state dict (`lm.*`, `v_head.*`) on the main process, gathered from every rank when the
    engine shards it (every rank must call this; the other ranks may get an empty dict)."""
    return trainer.accelerator.get_state_dict(trainer.model)


def optimizer_state(trainer) -> dict:
    """The optimizer state to save, on the main process (every rank must call this).

    Unsharded: the optimizer's own state dict. FSDP: the full state gathered from every rank, keyed by parameter
    name (torch.distributed.checkpoint). DeepSpeed ZeRO: every rank's partition (`ranks`, by rank), as its ZeRO
    optimizer returns it, with the loss scaler's numbers in place of the object.
    """
    accelerator, optimizer = trainer.accelerator, trainer.optimizer.optimizer
    if accelerator.distributed_type == DistributedType.FSDP:
        # lazy: torch.distributed.checkpoint takes ~0.7 s to import; only FSDP runs need it
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(trainer.model, optimizer, options=options)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        state = dict(optimizer.state_dict())
        state["loss_scaler"] = _numbers(state["loss_scaler"])
        state["zero_stage"] = int(state["zero_stage"])
        state["fp32_flat_groups"] = [t.detach().cpu().clone() for t in state["fp32_flat_groups"]]
        return {"ranks": gather_object([state])}
    return optimizer.state_dict()


def load_optimizer_state(trainer, state: dict) -> None:
    """Inverse of `optimizer_state`: every rank loads the saved state and keeps its own slice."""
    accelerator, optimizer = trainer.accelerator, trainer.optimizer.optimizer
    if accelerator.distributed_type == DistributedType.FSDP:
        # lazy: torch.distributed.checkpoint takes ~0.7 s to import; only FSDP runs need it
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(trainer.model, optimizer, optim_state_dict=state,
                                 options=StateDictOptions(full_state_dict=True))
    elif accelerator.distributed_type == DistributedType.DEEPSPEED:
        scaler = optimizer.loss_scaler
        for name, value in state["ranks"][accelerator.process_index]["loss_scaler"].items():
            setattr(scaler, name, value)
        optimizer.load_state_dict([rank | {"loss_scaler": scaler} for rank in state["ranks"]])
    else:
        optimizer.load_state_dict(state)


def _numbers(obj) -> dict:
    """The number-valued attributes of an object (a DeepSpeed loss scaler: its scale and counters)."""
    return {name: value for name, value in vars(obj).items() if isinstance(value, (bool, int, float))}


def configure_deepspeed(accelerator, mini_batch_size: int, accumulation: int) -> None:
    """Tell DeepSpeed the micro-batch (the PPO mini-batch) and the batch of one optimizer step: accelerate reads them
    from a dataloader, and the PPO loop has none."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        config = accelerator.state.deepspeed_plugin.deepspeed_config
        config["train_micro_batch_size_per_gpu"] = mini_batch_size
        config["train_batch_size"] = mini_batch_size * accumulation * accelerator.num_processes
