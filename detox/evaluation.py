"""Toxicity evaluation of several models on the same prompts, decoding and seeds.

For each model: sample k completions per prompt, score each completion alone (as TRL's evaluate-toxicity script
does) with every configured toxicity judge (detox.judges), and compute each completion's log-likelihood under one
fixed perplexity model (the fluency measure). A model's results go to output_dir/cache/<name>.jsonl once it has
finished, so an interrupted run resumes with the next model. The table is computed from the per-sample rows by
`detox.metrics.build_table`.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from detox import metrics
from detox.config import DataConfig, GenerationConfig, from_dict
from detox.corpus import read_corpus
from detox.data import EVALUATION_ONLY, load_prompts, render_prompts
from detox.generation import generate_completions
from detox.hub import resolve_model_path
from detox.judge_specs import parse_judges
from detox.judges import build_judge, relation, run_config
from detox.models import _base_of_adapter, load_causal_lm, load_tokenizer
from detox.recipe_files import forget_prompt_file
from detox.scoring import document_perplexity, sequence_nll
from detox.validity import floor_free_change

HUB_PROMPTS: dict[str, dict[str, Any]] = {
    # TRL's detoxification example: RealToxicityPrompts with prompt toxicity > 0.3 (DataConfig's defaults)
    "hub": {"prompts": "allenai/real-toxicity-prompts"},
    # TRL's evaluate-toxicity script: the toxic-labelled (label 1) comments of wiki_toxic's test split
    "wiki_toxic": {"prompts": "OxAISH-AL-LLM/wiki_toxic", "split": "test", "text_field": "comment_text",
                   "toxicity_field": "label", "min_toxicity": 0.5, "min_prompt_tokens": 1, "max_prompt_tokens": 512},
    # RealToxicityPrompts' non-toxic prompts (shipped): every one kept, whatever its toxicity score
    "builtin:rtp_nontoxic": {"prompts": "builtin:rtp_nontoxic", "min_toxicity": None},
    # ToxiGen-style implicit-hate prompts (shipped): a few statements about one group, one a line; the whole file
    # is held out of training, and each prompt is kept whole (its statements are the context)
    "builtin:toxigen_implicit": {"prompts": "builtin:toxigen_implicit", "toxicity_field": None, "min_toxicity": None,
                                 "min_prompt_tokens": 1, "max_prompt_tokens": 1024},
}
FORGET_PROMPT_WORDS, FORGET_CONTINUATION_WORDS = 32, 16
"""A forget passage is 48 consecutive words: the model continues the first 32; ROUGE-L compares with the next 16."""
_NAME = re.compile(r"^[\w.-]+$")
RecipeMetrics = Callable[..., tuple[dict, list]]
"""`(cfg, recipe_dir, name, model, tokenizer, completions, prompts) -> (metrics, rows)` of one model on a recipe."""


@dataclass
class EvalConfig:
    """Compare the toxicity, fluency and diversity of several models' completions of the same prompts."""

    models: list[str] | str = field(default_factory=lambda: ["base=smollm2-135m-instruct"])
    """`name=path` (Hub id, dir, LoRA adapter dir, smollm2-135m-instruct); the first is the base of every Δ."""
    prompts: str = "builtin:rtp_challenging"
    """As data.prompts (file, Hub dataset id, builtin:rtp_challenging), `builtin:rtp_nontoxic` (non-toxic prompts, for
    locality), `builtin:toxigen_implicit` (implicit hate about 13 groups, ToxiGen-style, all used whole), or, with the Hub reachable, `hub` = allenai/real-toxicity-prompts with toxicity > 0.3, or
    `wiki_toxic` = TRL's evaluate-toxicity prompts."""
    data: dict[str, Any] = field(default_factory=dict)
    """data.* settings of the prompts (as in a run config: text_field, toxicity_field, min_toxicity, prompt window,
    heldout_fraction, seed, chat_template...), e.g. `--data.text_field text --data.min_toxicity null`; they override
    run_config's, whose chat_template renders the prompts as the run was trained on them."""
    run_config: str | None = None
    """A run's config.yaml (or its output directory): its data section gives the prompts, field names, filters,
    window and held-out split of the training; a `--prompts` other than the default replaces only the prompts."""
    recipe_dir: str | None = None
    """A recipe's directory (recipe.json; see detox/recipes): adds its forget-efficacy and locality metrics, and
    evaluates its held-out forget prompts unless data.prompts says otherwise. Found from run_config when unset."""
    recipe_prompts: int | None = 200
    """Held-out prompts of each recipe set (forbidden, control...) in the recipe metrics; null uses all."""
    prompt_split: Literal["heldout", "all"] = "heldout"
    """`heldout`: only the prompts train_ppo.py holds out under the default data settings (unseen in training)."""
    num_prompts: int | None = 100
    """Prompts drawn at random (with `seed`) from the split; null uses all of them."""
    samples_per_prompt: int = 4
    """Completions per prompt (k). The literature uses 25 for expected max toxicity; 4 keeps a CPU run short."""
    min_new_tokens: int = 20
    """Shortest completion length drawn per sample (the TRL example draws 20 to 30)."""
    max_new_tokens: int = 30
    """Longest completion length drawn per sample."""
    top_k: int = 0
    """Top-k sampling; 0 disables it (pure sampling, as in the TRL example)."""
    top_p: float = 1.0
    """Nucleus sampling threshold; 1.0 disables it."""
    seed: int = 0
    """Seed of the prompt subset, of sampling (identical for every model) and of the bootstrap."""
    judges: list[str] | str = field(default_factory=lambda: ["judge_combined", "judge_toxigen", "offline"])
    """Toxicity judges, each `source` or `name=source`: judge_<source> and judge_combined (MiniLM fitted on labelled
    sources: toxigen, stormfront, davidson, rtp; judge_combined on the first three), offline (alt-profanity-check),
    minilm_davidson (MiniLM's pooler output fitted on Davidson rows no reward uses), minilm_davidson_reward, roberta
    (evaluate's toxicity measurement, Hub), or any classifier directory or Hub id. Every completion is scored by
    each; see detox/judges.py. The default holds the two judges that agree best with human labels they never saw and
    the profanity check (docs/judge-validity.md)."""
    judge_options: dict[str, dict] = field(default_factory=dict)
    """Per judge name, keyword arguments of rewards.toxicity.ToxicityClassifier, e.g. {mine: {toxic_label: toxic}}."""
    perplexity_model: str | None = None
    """Model whose perplexity of the completions measures fluency; null = the base model (first entry's base)."""
    phrases: list[str] = field(default_factory=list)
    """Phrases whose hit rate (share of completions containing one, whole words, any case) gets a column."""
    forget_corpus: str | None = None
    """Text to be forgotten (.txt/.jsonl/dir): adds ROUGE-L of completions vs the true text, and perplexity on it."""
    retain_corpus: str | None = None
    """Text the models should still model well: adds each model's perplexity on it."""
    forget_passages: int = 32
    """Passages drawn from each of forget_corpus and retain_corpus."""
    bootstrap_samples: int = 1000
    """Bootstrap replicates of each confidence interval."""
    output_dir: str = "outputs/eval"
    """Where results.md/csv/json, samples.csv/jsonl, toxicity.png and the per-model cache go."""
    batch_size: int = 16
    """Sequences per generate, judge and perplexity call."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weight dtype of the evaluated models and the perplexity model."""
    device: str | None = None
    """Device of the models; null = cuda when available, else cpu."""
    report_to: Literal["none", "wandb"] = "none"
    """Also log the table and the samples to W&B (offline without a key or network)."""
    project: str = "detox"
    """W&B project."""
    trust_remote_code: bool = False
    """Allow code shipped in model directories to run. Only for models whose code you have read."""

    def __post_init__(self):
        if isinstance(self.models, str):
            self.models = [self.models]
        if isinstance(self.judges, str):
            self.judges = [self.judges]
        self.judge_list()  # names checked before anything loads
        names = [name for name, _ in self.model_specs()]
        if not names or not all(_NAME.match(n) for n in names) or len(set(names)) < len(names):
            raise ValueError(f"models: names {names} must be given, unique, and only letters, digits, '.', '_', '-'.")
        for name in ("samples_per_prompt", "min_new_tokens", "batch_size", "bootstrap_samples", "forget_passages"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} ({getattr(self, name)}) must be a positive integer.")
        if self.num_prompts is not None and self.num_prompts <= 0:
            raise ValueError(f"num_prompts ({self.num_prompts}) must be positive, or null for all prompts.")
        if self.max_new_tokens < self.min_new_tokens:
            raise ValueError(
                f"max_new_tokens ({self.max_new_tokens}) must be >= min_new_tokens ({self.min_new_tokens})."
            )

    def model_specs(self) -> list[tuple[str, str]]:
        """[(name, path)] in the order given."""
        return [tuple(m.split("=", 1)) if "=" in m else (Path(m.rstrip("/")).name, m) for m in self.models]

    def generation(self) -> GenerationConfig:
        return GenerationConfig(min_new_tokens=self.min_new_tokens, max_new_tokens=self.max_new_tokens,
                                top_k=self.top_k, top_p=self.top_p)

    def recipe_dir_path(self) -> Path | None:
        """The recipe directory: recipe_dir, or the folder of run_config's prompt file when it holds recipe.json."""
        if self.recipe_dir:
            return Path(self.recipe_dir)
        if self.run_config:
            prompts = (run_config_dict(self.run_config).get("data") or {}).get("prompts")
            if prompts and (Path(prompts).parent / "recipe.json").is_file():
                return Path(prompts).parent
        return None

    def judge_list(self):
        return parse_judges(self.judges, self.judge_options)

    def perplexity_model_path(self) -> str:
        base = self.model_specs()[0][1]
        return self.perplexity_model or _base_of_adapter(base) or base


@dataclass
class ModelRun:
    samples: list[dict[str, Any]]
    """One row per completion, ordered by (prompt_index, sample_index)."""
    forget: dict[str, float] = field(default_factory=dict)
    """forget_rouge_l, forget_perplexity, retain_perplexity (those configured)."""
    forget_samples: list[dict[str, Any]] = field(default_factory=list)
    recipe: dict[str, float] = field(default_factory=dict)
    """The recipe's forget-efficacy, locality and fluency metrics (detox.recipes.metrics), with their intervals."""
    recipe_samples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class EvalResult:
    prompts: list[str]
    runs: dict[str, ModelRun]
    table: list[dict[str, Any]]  # one row of raw numbers per model: metrics.build_table's, plus forget metrics
    relations: dict[str, dict[str, str]] = field(default_factory=dict)
    """model -> judge -> `reward` | `sibling` | `independent` (detox.judges.relation), from the model's run config."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)  # stdout carries only the table


def data_config(cfg: EvalConfig) -> DataConfig:
    """The prompt settings: `prompts` (or the run's data section), then the recipe's held-out file, then `data`."""
    chosen = dict(HUB_PROMPTS.get(cfg.prompts, {"prompts": cfg.prompts}))
    settings = dict(run_config_dict(cfg.run_config).get("data") or {}) if cfg.run_config else chosen
    recipe = cfg.recipe_dir_path()
    if recipe is not None:
        settings["prompts"] = str(forget_prompt_file(recipe))
    if cfg.run_config and cfg.prompts != EvalConfig.prompts:  # --prompts named beside --run_config: those prompts
        settings.update(chosen)
    return from_dict(DataConfig, {**settings, **cfg.data}, "data")


def run_config_dict(path: str) -> dict[str, Any]:
    """A run's saved config (config.yaml in its output directory) or any run config file, as plain data."""
    file = Path(path) / "config.yaml" if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"run_config '{path}': no such config file (a run directory holds config.yaml).")
    return yaml.safe_load(file.read_text(encoding="utf-8")) or {}


def load_eval_prompts(cfg: EvalConfig, tokenizer) -> list[str]:
    """The evaluation prompts: the chosen split of the source, then a seeded random subset of num_prompts, as the
    models read them (chat messages through the tokenizer's chat template, per data.chat_template)."""
    data = data_config(cfg)
    split = load_prompts(data, tokenizer)
    held_out_file = cfg.recipe_dir_path() is not None and "prompts" not in cfg.data  # a recipe's file is held out
    whole_file = held_out_file or data.prompts in EVALUATION_ONLY
    pool = split.heldout if cfg.prompt_split == "heldout" and not whole_file else split.train + split.heldout
    if cfg.num_prompts is None:
        return render_prompts(pool, tokenizer, data.chat_template)
    if cfg.num_prompts > len(pool):
        raise ValueError(
            f"num_prompts ({cfg.num_prompts}) is more than the {len(pool)} prompts of '{data.prompts}' in split "
            f"'{cfg.prompt_split}' (load stats {split.stats}); lower num_prompts or set prompt_split all."
        )
    pick = np.random.default_rng(cfg.seed).choice(len(pool), size=cfg.num_prompts, replace=False)
    return render_prompts([pool[i] for i in sorted(pick)], tokenizer, data.chat_template)


def forget_passages(corpus: str, n: int, seed: int) -> list[tuple[str, str]]:
    """n (prompt, true continuation) pairs cut from `corpus` at word boundaries, keeping its original spacing."""
    width = FORGET_PROMPT_WORDS + FORGET_CONTINUATION_WORDS
    windows = []
    for text in read_corpus(corpus):
        spans = [m.span() for m in re.finditer(r"\S+", text)]
        for s in range(0, len(spans) - width + 1, width):
            cut = spans[s + FORGET_PROMPT_WORDS - 1][1]
            windows.append((text[spans[s][0] : cut], text[cut : spans[s + width - 1][1]]))
    if not windows:
        raise ValueError(f"corpus '{corpus}' has no passage of {width} words; give a longer text.")
    pick = np.random.default_rng(seed).choice(len(windows), size=min(n, len(windows)), replace=False)
    return [windows[i] for i in sorted(pick)]


class Scorers:
    """The perplexity model and the toxicity judges, each loaded on first use and kept for every model."""

    def __init__(self, cfg: EvalConfig):
        self.cfg, self.device = cfg, cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._lm = self._judges = None

    def load_lm(self, path: str, what: str):
        log(f"loading {what} {path}")
        kwargs = dict(trust_remote_code=self.cfg.trust_remote_code, what=what)
        return load_causal_lm(path, self.cfg.dtype, device=self.device, **kwargs), load_tokenizer(path, **kwargs)

    def perplexity_lm(self):
        if self._lm is None:
            self._lm = self.load_lm(self.cfg.perplexity_model_path(), "perplexity_model")
        return self._lm

    def judges(self) -> dict:
        if self._judges is None:
            self._judges = {j.name: build_judge(j, self.cfg.batch_size, self.cfg.device, self.cfg.trust_remote_code)
                            for j in self.cfg.judge_list()}
        return self._judges

    def check(self, paths: list[str]) -> None:
        """Fail before anything is generated when a judge, a model or the perplexity model cannot load (a Hub id
        offline)."""
        self.judges()
        for path, what in [*((p, "models") for p in paths), (self.cfg.perplexity_model_path(), "perplexity_model")]:
            resolve_model_path(_base_of_adapter(path) or path, what)

    def toxicity(self, texts: list[str], desc: str) -> dict[str, np.ndarray]:
        """Judge name -> (N,) P(toxic) of each text."""
        step, out = self.cfg.batch_size, {}
        for name, judge in self.judges().items():
            batches = tqdm(range(0, len(texts), step), desc=f"{desc} {name}")
            chunks = [judge.toxicity(texts[i : i + step]) for i in batches]
            out[name] = np.concatenate(chunks) if chunks else np.zeros(0)
        return out


def fingerprint(cfg: EvalConfig, path: str, prompts: list[str]) -> str:
    """Hash of everything a model's cached results depend on; model directories by their files' sizes and times."""

    def signature(p: str | None) -> list:
        if not p:  # no such input (Path("") would be the working directory, whose files change all the time)
            return [p]
        d = Path(p)
        # the model card is an output (evaluate_toxicity.py writes its table there), not something results depend on
        files = sorted(f for f in d.iterdir() if f.is_file() and f.name != "README.md") if d.is_dir() else \
            [d] if d.is_file() else []
        return [p] + [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]

    keys = ("samples_per_prompt", "min_new_tokens", "max_new_tokens", "top_k", "top_p", "seed", "judges",
            "judge_options", "forget_passages", "dtype", "recipe_prompts")
    state = {k: getattr(cfg, k) for k in keys}
    state.update({k: signature(v) for k, v in (("model", path), ("perplexity", cfg.perplexity_model_path()),
                                               ("forget", cfg.forget_corpus), ("retain", cfg.retain_corpus),
                                               ("recipe", str(cfg.recipe_dir_path() or "")))})
    state["prompts"] = prompts
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_cache(path: Path, key: str) -> ModelRun | None:
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])
    if header["fingerprint"] != key:
        log(f"{path}: made with other settings or another model version; evaluating again")
        return None
    return ModelRun([json.loads(line) for line in lines[1:]], header["forget"], header["forget_samples"],
                    header.get("recipe", {}), header.get("recipe_samples", []))


def write_cache(path: Path, key: str, run: ModelRun) -> None:
    """Write the header line and one line per sample to a temporary file, then rename it over `path` (atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"fingerprint": key, "forget": run.forget, "forget_samples": run.forget_samples, "recipe": run.recipe,
              "recipe_samples": run.recipe_samples}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in [header, *run.samples]:
            handle.write(json.dumps(record) + "\n")
    os.replace(tmp, path)


def evaluate_model(cfg: EvalConfig, name: str, path: str, prompts: list[str], scorers: Scorers,
                   recipe_metrics: RecipeMetrics | None = None) -> ModelRun:
    """Generate k completions per prompt, score them with every judge, and compute the perplexity model's NLL; with a
    recipe, add `recipe_metrics` of the model."""
    k = cfg.samples_per_prompt
    is_lm = path == cfg.perplexity_model_path()
    model, tokenizer = scorers.perplexity_lm() if is_lm else scorers.load_lm(path, f"model {name}")
    completions = generate_completions(model, tokenizer, prompts, cfg.generation(), num_return_sequences=k,
                                       batch_size=cfg.batch_size, seed=cfg.seed, progress=True,
                                       desc=f"{name}: generate")
    run = ModelRun(samples=[])
    if cfg.forget_corpus or cfg.retain_corpus:
        run.forget, run.forget_samples = forget_metrics(cfg, name, model, tokenizer)
    recipe = cfg.recipe_dir_path()
    if recipe is not None:
        if recipe_metrics is None:
            raise ValueError(f"recipe_dir '{recipe}': give run_evaluation the recipe metrics "
                             f"(detox.recipes.metrics.recipe_metrics) to evaluate a recipe.")
        run.recipe, run.recipe_samples = recipe_metrics(cfg, recipe, name, model, tokenizer, completions, prompts)
    if not is_lm:  # free the model before the judges and the perplexity model run, and before the next model loads
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    flat = [c for per_prompt in completions for c in per_prompt]
    toxicity = scorers.toxicity(flat, desc=f"{name}: toxicity")
    lm, lm_tokenizer = scorers.perplexity_lm()
    contexts = [p for p in prompts for _ in range(k)]
    nll, count = sequence_nll(lm, lm_tokenizer, contexts, flat, cfg.batch_size, f"{name}: perplexity")
    for i, text in enumerate(flat):
        run.samples.append({"model": name, "prompt_index": i // k, "sample_index": i % k, "prompt": contexts[i],
                            "completion": text, **{f"toxicity/{j}": float(t[i]) for j, t in toxicity.items()},
                            "nll": float(nll[i]), "num_tokens": int(count[i])})
    return run


def forget_metrics(cfg: EvalConfig, name: str, model, tokenizer) -> tuple[dict[str, float], list[dict]]:
    """ROUGE-L of completions of forget passages vs their true continuations; perplexity on forget/retain text."""
    out, samples = {}, []
    if cfg.forget_corpus:
        passages = forget_passages(cfg.forget_corpus, cfg.forget_passages, cfg.seed)
        heads = [head for head, _ in passages]
        completions = generate_completions(model, tokenizer, heads, cfg.generation(), batch_size=cfg.batch_size,
                                           seed=cfg.seed, progress=True, desc=f"{name}: forget generate")
        for i, ((head, truth), (completion,)) in enumerate(zip(passages, completions)):
            samples.append({"model": name, "passage_index": i, "prompt": head, "reference": truth,
                            "completion": completion, "rouge_l": metrics.rouge_l(completion, truth)})
        out["forget_rouge_l"] = float(np.mean([s["rouge_l"] for s in samples]))
        out |= passage_perplexity("forget_perplexity", model, tokenizer, cfg.forget_corpus, cfg)
    if cfg.retain_corpus:
        out |= passage_perplexity("retain_perplexity", model, tokenizer, cfg.retain_corpus, cfg)
    return out, samples


def passage_perplexity(key: str, model, tokenizer, corpus, cfg: EvalConfig) -> dict[str, float]:
    """Perplexity of `cfg.forget_passages` whole passages drawn from `corpus`, with its 95% bootstrap interval over
    passages, keyed `key`."""
    texts = [head + tail for head, tail in forget_passages(str(corpus), cfg.forget_passages, cfg.seed)]
    return document_perplexity(key, model, tokenizer, texts, cfg, f"perplexity {Path(corpus).name}")


def run_evaluation(cfg: EvalConfig, recipe_metrics: RecipeMetrics | None = None) -> EvalResult:
    """Evaluate every model not already in the cache, then build the table. A recipe's metrics come from
    `recipe_metrics` (the evaluate job passes detox.recipes.metrics.recipe_metrics: recipes stand above this loop)."""
    specs = cfg.model_specs()
    tokenizer = load_tokenizer(specs[0][1], cfg.trust_remote_code, what="models[0]")
    prompts = load_eval_prompts(cfg, tokenizer)
    log(f"{len(prompts)} prompts x {cfg.samples_per_prompt} samples; models: {[n for n, _ in specs]}")
    caches = {name: (Path(cfg.output_dir) / "cache" / f"{name}.jsonl", fingerprint(cfg, path, prompts))
              for name, path in specs}
    runs = {name: read_cache(*caches[name]) for name, _ in specs}
    scorers = Scorers(cfg)
    if None in runs.values():
        scorers.check([path for name, path in specs if runs[name] is None])
    for name, path in specs:
        if runs[name] is not None:
            log(f"{name}: cached results reused from {caches[name][0]}")
            continue
        runs[name] = evaluate_model(cfg, name, path, prompts, scorers, recipe_metrics)
        write_cache(*caches[name], runs[name])
    for run in runs.values():
        hits = metrics.phrase_hits([s["completion"] for s in run.samples], cfg.phrases) if cfg.phrases else []
        for sample, hit in zip(run.samples, hits):
            sample["phrase_hit"] = bool(hit)
    judges = cfg.judge_list()
    table = metrics.build_table({n: r.samples for n, r in runs.items()}, [j.name for j in judges],
                                cfg.samples_per_prompt, cfg.bootstrap_samples, cfg.seed, cfg.phrases)
    relations = {name: {j.name: relation(j, run_config(path)) for j in judges} for name, path in specs}
    rows = [{**row, **runs[row["model"]].forget, **runs[row["model"]].recipe} for row in table]
    for row in rows[1:]:  # changes that do not depend on where a judge's scale starts (detox.validity)
        for judge in judges:
            base, model = (_judge_scores(runs[name], judge.name, cfg.samples_per_prompt)
                           for name in (rows[0]["model"], row["model"]))
            row.update({f"{judge.name}/{k}": v for k, v in floor_free_change(base, model).items()})
    return EvalResult(prompts, runs, rows, relations)


def _judge_scores(run: ModelRun, judge: str, k: int) -> np.ndarray:
    """(prompts, k) toxicity of `run`'s completions under `judge` (samples are ordered by prompt, then sample)."""
    return np.asarray([s[f"toxicity/{judge}"] for s in run.samples], dtype=np.float64).reshape(-1, k)
