"""The policy (a causal LM with a value head on its own backbone), its tokenizer, and the frozen reference.

Reference model: with LoRA, the policy's own weights with the adapters switched off (no copy); without LoRA, a
frozen copy whose lower `num_shared_layers` layers share storage with the policy.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from detox.config import LoraConfig, ModelConfig
from detox.hub import OFFLINE_MODEL, resolve_model_path

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False, what: str = "model.name_or_path"):
    """Tokenizer padded on the left (prompts end where generation starts), with a pad token."""
    path = resolve_model_path(_base_of_adapter(name_or_path) or name_or_path, what)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(
    name_or_path: str,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    device: str | torch.device | None = None,
    what: str = "model.name_or_path",
):
    """A causal LM for inference: a Hub id, a local directory, the offline alias, or a LoRA adapter directory.

    An adapter directory is loaded onto its base (from adapter_config.json) and merged, so callers see one model.
    """
    model = load_weights(name_or_path, dtype, trust_remote_code, what=what)
    if device is not None:
        model.to(device)
    return model.eval()


def load_weights(name_or_path: str, dtype: str, trust_remote_code: bool, revision: str | None = None,
                 what: str = "model.name_or_path", _chain: tuple[Path, ...] = ()) -> nn.Module:
    """The causal LM `name_or_path` names, as one model. A LoRA adapter directory is loaded onto its base and merged;
    that base may itself be an adapter directory (a run started from another run's adapter), loaded the same way.
    `revision` applies to a Hub id given directly."""
    base = _base_of_adapter(name_or_path)
    if base is None:
        path = resolve_model_path(name_or_path, what)
        return AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code,
                                                    revision=revision)
    here = Path(name_or_path).expanduser().resolve()
    if Path(base).expanduser().resolve() in (*_chain, here):
        raise ValueError(f"{what}: the adapter in '{name_or_path}' names itself (or an adapter built on it) as its "
                         "base; point model.name_or_path in its detox_config.yaml, or base_model_name_or_path in its "
                         "adapter_config.json, at the model it was trained on.")
    model = load_weights(base, dtype, trust_remote_code, what=what, _chain=(*_chain, here))
    return PeftModel.from_pretrained(model, name_or_path).merge_and_unload()


def _base_of_adapter(name_or_path: str) -> str | None:
    """The base model of an adapter directory (None for anything else).

    adapter_config.json names the base by Hub id; when detox trained the adapter here, its saved config names the
    exact weights it was trained against (the packaged offline model, a local directory), which win while present.
    """
    config = Path(name_or_path) / "adapter_config.json"
    if not config.is_file():
        return None
    run = Path(name_or_path) / "detox_config.yaml"
    if run.is_file():
        trained_on = (yaml.safe_load(run.read_text()).get("model") or {}).get("name_or_path")
        if trained_on == OFFLINE_MODEL or (trained_on and Path(trained_on).expanduser().is_dir()):
            return trained_on
    return json.loads(config.read_text())["base_model_name_or_path"]


class PolicyWithValueHead(nn.Module):
    """A causal LM and a scalar value head reading the LM's last hidden state (one backbone, two outputs)."""

    def __init__(self, lm: nn.Module, hidden_size: int):
        super().__init__()
        self.lm = lm
        self.v_head = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.v_head.weight, std=1.0 / (hidden_size + 1))
        nn.init.zeros_(self.v_head.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        logits_to_keep: int = 0,
        trunk: "Trunk | None" = None,
        lm_task: str | None = None,
        lm_kwargs: dict | None = None,
    ):
        """(B, T) token ids and mask -> logits (B, K, V) of the last K = logits_to_keep positions (all when 0),
        values (B, T) and the hidden states (index i: the (B, T, H) input of layer i; the layers below
        `trunk.layers` are missing when `trunk` is given).

        With `lm_task`, the call is the language model's alone, with `lm_kwargs`: "lm" returns its output,
        "reference" the same with the LoRA adapters off, "generate" its `generate()`. Such calls come through this
        forward (see LMView) because sharding engines act in forward hooks: FSDP2 gathers the weights a module
        owns directly (here the value head, and anything not wrapped on its own) in its root's hook, and refuses
        to run an inner module before the root.
        """
        if lm_task is not None:
            return self._lm_task(lm_task, input_ids, attention_mask, lm_kwargs or {})
        out = causal_lm_forward(self.lm, input_ids, attention_mask, logits_to_keep, trunk, output_hidden_states=True)
        hidden = out.hidden_states[-1]
        values = self.v_head(hidden.to(self.v_head.weight.dtype)).squeeze(-1)
        return out.logits, values, out.hidden_states

    def _lm_task(self, task: str, input_ids, attention_mask, kwargs: dict):
        if task not in LM_TASKS:
            raise ValueError(f"PolicyWithValueHead: unknown lm_task {task!r}; valid tasks are {list(LM_TASKS)}.")
        call = self.lm.generate if task == "generate" else self.lm
        adapters_off = self.lm.disable_adapter() if task == "reference" else contextlib.nullcontext()
        with adapters_off:
            return call(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    @property
    def is_peft(self) -> bool:
        return hasattr(self.lm, "disable_adapter")


LM_TASKS = ("lm", "reference", "generate")


class LMView:
    """The policy's language model as generation, probes and the LoRA reference call it (`model(...)`,
    `model.generate(...)`, `model.generation_config`), every call made through the policy's own forward."""

    def __init__(self, policy: PolicyWithValueHead, task: str = "lm"):
        self.policy, self.task = policy, task

    @property
    def generation_config(self):
        return self.policy.lm.generation_config

    def __call__(self, input_ids=None, attention_mask=None, **kwargs):
        return self.policy(input_ids, attention_mask, lm_task=self.task, lm_kwargs=kwargs)

    def generate(self, input_ids=None, attention_mask=None, **kwargs):
        return self.policy(input_ids, attention_mask, lm_task="generate", lm_kwargs=kwargs)


@dataclass
class Trunk:
    """The output of the policy's frozen lower layers, which the reference shares: computed once per rollout."""

    layers: int
    """How many lower decoder layers (with the embeddings) it skips."""
    hidden: torch.Tensor
    """(B, T, H) the hidden state entering layer `layers` (`hidden_states[layers]` of a full forward pass)."""

    def __getitem__(self, index: torch.Tensor) -> "Trunk":
        """The rows `index` (a mini-batch)."""
        return Trunk(self.layers, self.hidden[index])


def causal_lm_forward(lm, input_ids, attention_mask, logits_to_keep: int = 0, trunk: Trunk | None = None, **kwargs):
    """A no-cache forward pass with positions that skip left padding; from `trunk.hidden` up when `trunk` is given.

    The lower layers are skipped by handing the decoder only its upper layers for the call, with the trunk's hidden
    state as `inputs_embeds`; the causal mask and rotary positions are rebuilt from the same mask and positions.
    """
    common = dict(
        attention_mask=attention_mask,
        position_ids=position_ids(attention_mask),
        use_cache=False,
        logits_to_keep=logits_to_keep,
        **kwargs,
    )
    if trunk is None or trunk.layers == 0:
        return lm(input_ids=input_ids, **common)
    decoder = lm.get_decoder()
    layers = decoder.layers
    decoder.layers = layers[trunk.layers :]
    try:
        return lm(inputs_embeds=trunk.hidden, **common)
    finally:
        decoder.layers = layers


# Decoders whose forward pass feeds `inputs_embeds` straight to `layers`, so the trunk's hidden state can stand in
# for the embeddings. Others rescale inputs_embeds (Gemma by sqrt(hidden size), Granite by a multiplier) or keep
# their layers elsewhere (GPT-2, GPT-Neo, GPT-J: `h`); they run every layer.
TRUNK_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


def frozen_trunk_layers(lm: nn.Module, reference: nn.Module | None, num_shared_layers: int | None) -> int:
    """How many lower layers a rollout's trunk can skip: those the reference shares, provided they and the input
    embeddings are frozen in the policy (their output then never changes during a step) and the decoder is one of
    TRUNK_MODEL_TYPES; else 0."""
    if reference is None or not num_shared_layers:
        return 0
    if getattr(lm.config, "model_type", None) not in TRUNK_MODEL_TYPES:
        return 0
    decoder = lm.get_decoder() if hasattr(lm, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        return 0
    lower = [*lm.get_input_embeddings().parameters(), *layers[:num_shared_layers].parameters()]
    return num_shared_layers if not any(p.requires_grad for p in lower) else 0


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as `generate` assigns them: (B, T) -> (B, T)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@dataclass
class Models:
    policy: PolicyWithValueHead
    reference: nn.Module | None
    """Frozen copy (full fine-tuning) or None (LoRA: the policy with adapters disabled is the reference)."""
    base_path: str
    memory_report: dict[str, float]
    trunk_layers: int = 0
    """Lower layers frozen in the policy and shared with the reference, whose output each rollout computes once and
    the reference and every update reuse (0: none, e.g. with LoRA)."""

    def reference_lm(self):
        """What computes reference log-probabilities: the frozen copy, or the policy's LM with adapters off."""
        return self.reference if self.reference is not None else LMView(self.policy, "reference")


def build_models(model_cfg: ModelConfig, lora_cfg: LoraConfig) -> Models:
    """Load the policy, attach LoRA and the value head, and build the reference model."""
    path = resolve_model_path(model_cfg.name_or_path, "model.name_or_path")
    # a LoRA adapter directory (an earlier run's final/) starts this run from its merged weights
    lm = load_weights(path, model_cfg.dtype, model_cfg.trust_remote_code, model_cfg.revision)
    return assemble_models(lm, path, model_cfg, lora_cfg)


def assemble_models(lm: nn.Module, path: str, model_cfg: ModelConfig, lora_cfg: LoraConfig) -> Models:
    """Turn a causal LM (loaded, or built from a config with random weights) into the policy and its reference:
    dropout off, gradient checkpointing, LoRA, value head and the reference, as `model_cfg` and `lora_cfg` say."""
    disable_dropout(lm)
    head = lm.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(_contiguous_input)
    n_layers = lm.config.num_hidden_layers
    param_bytes = sum(p.numel() * p.element_size() for p in lm.parameters())
    if model_cfg.num_shared_layers is not None and not lora_cfg.enabled:
        if model_cfg.num_shared_layers > n_layers:
            raise ValueError(
                f"model.num_shared_layers ({model_cfg.num_shared_layers}) is larger than the model's layer count "
                f"({n_layers}); use at most {n_layers}, or null for an unshared reference."
            )
    if model_cfg.gradient_checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        lm.config.use_cache = False
    if lora_cfg.enabled:
        lm = _attach_lora(lm, lora_cfg)
        if model_cfg.gradient_checkpointing:
            lm.enable_input_require_grads()
        reference, ref_bytes = None, 0
    else:
        reference = _reference_copy(lm, model_cfg.num_shared_layers)
        ref_bytes = _unshared_bytes(lm, reference)
    policy = PolicyWithValueHead(lm, lm.config.get_text_config().hidden_size)
    policy.v_head.to(torch.float32)
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    report = {
        "memory/model_gb": param_bytes / 2**30,
        "memory/reference_gb": ref_bytes / 2**30,
        "memory/reference_saved_gb": (param_bytes - ref_bytes) / 2**30,
        "params/trainable_m": trainable / 1e6,
    }
    trunk_layers = frozen_trunk_layers(lm, reference, model_cfg.num_shared_layers)
    return Models(policy=policy, reference=reference, base_path=path, memory_report=report, trunk_layers=trunk_layers)


def _contiguous_input(module: nn.Module, args: tuple) -> tuple:
    """Hand the LM head a contiguous input.

    transformers slices the last hidden state to the positions whose logits are kept (`logits_to_keep`; generation's
    prefill keeps one), a non-contiguous view. torch 2.13 on CPU multiplies such a view by a frozen weight on a slow
    path: for a (16, 1, 256) slice and a frozen bf16 50400 x 256 head, 7.5 s and a 396 MB buffer instead of 0.02 s
    and 2 MB (8x slower in float32), measured here; a frozen head is what LoRA and the reference copy have.
    """
    return (args[0].contiguous(), *args[1:])


def disable_dropout(model: nn.Module) -> None:
    """Zero every dropout: PPO compares log-probabilities of the same tokens before and after an update, and
    dropout noise would show up as policy change (and gradient checkpointing needs train mode, which enables it)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        for name in ("attention_dropout", "attn_dropout", "dropout"):
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)


def _attach_lora(lm: nn.Module, lora_cfg: LoraConfig) -> nn.Module:
    peft_config = PeftLoraConfig(
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        target_modules=lora_cfg.target_modules,
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(lm, peft_config)
    except ValueError as err:
        linear = sorted({name.rsplit(".", 1)[-1] for name, m in lm.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(
            f"lora.target_modules ({lora_cfg.target_modules}) does not match the model's modules: {err}. "
            f"Linear modules of this model: {linear} (or use 'all-linear')."
        ) from None


def _reference_copy(lm: nn.Module, num_shared_layers: int | None) -> nn.Module:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    # lazy: after TRL_EXPERIMENTAL_SILENCE is set, and only a full-weights reference copy needs TRL
    from trl.experimental.utils import create_reference_model

    try:
        return create_reference_model(lm, num_shared_layers=num_shared_layers)
    except ValueError as err:
        raise ValueError(
            f"model.num_shared_layers ({num_shared_layers}): {err} Set it to null for an unshared reference."
        ) from None


def _unshared_bytes(lm: nn.Module, reference: nn.Module) -> int:
    """Bytes the reference adds on top of the policy (shared parameters point at the same storage)."""
    policy_ptrs = {p.data_ptr() for p in lm.parameters()}
    return sum(p.numel() * p.element_size() for p in reference.parameters() if p.data_ptr() not in policy_ptrs)
