"""TOFU's metrics of one model (detox.tofu_metrics defines each), from its losses on the answers of TOFU's sets and
its greedy answers, under open-unlearning's key names.

Per model: forget (the forget split's questions), retain (TOFU's 400 retain questions with perturbed answers), real
authors (`ra`) and world facts (`wf`):
- `<set>_Q_A_Prob`: mean length-normalised probability of the true answer (on ra and wf, `_normalised`: its share
  over the wrong options);
- `<set>_Q_A_ROUGE`: mean ROUGE-L recall of the greedy answer;
- `<set>_Truth_Ratio`: forget as mean min(R, 1/R), the others as mean max(0, 1 - R); forget and retain also give the
  paraphrased and perturbed answers' probabilities (`_PARA_Prob`, `_PERT_Prob`);
- `model_utility` (harmonic mean of the nine retain-side values), `extraction_strength` on the forget answers, and,
  given the retain model's forget truth ratios, `forget_quality` (KS-test p-value);
- with a `holdout` set, `mia_min_k` (Min-K% membership AUC, forget against holdout answers) and, given the retain
  model's, `privleak`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from detox import tofu_metrics as tm
from detox.evaluation import log
from detox.models import load_causal_lm, load_tokenizer
from detox.recipe_files import read_jsonl, read_manifest
from detox.scoring import greedy_completions, token_scores
from detox.tofu_data import qa_answer, qa_prompt, read_set

SETS = {"forget": "forget", "retain": "retain", "ra": "real_authors", "wf": "world_facts"}
"""Key prefix -> what the set is."""
MAX_NEW_TOKENS = 64
"""Tokens of each greedy answer (TOFU's answers are about 25 words)."""


@dataclass
class AnswerScores:
    """Mean NLL per token (N,) of each answer, teacher-forced greedy hits per token (list of (n_i,) bool) and the
    NLL of each token (list of (n_i,))."""

    nll: np.ndarray
    hits: list[np.ndarray]
    per_token: list[np.ndarray]


def score_answers(model, tokenizer, questions: list[str], answers: list[str], template: str,
                  batch_size: int, desc: str) -> AnswerScores:
    prompts = [qa_prompt(tokenizer, q, template) for q in questions]
    per_token, hits = token_scores(model, tokenizer, prompts, [qa_answer(a, template) for a in answers], batch_size,
                                   desc)
    empty = [i for i, t in enumerate(per_token) if not np.isfinite(t).any()]
    if empty:
        raise ValueError(f"{desc}: answer {empty[0] + 1} ({answers[empty[0]]!r}) has no token to score.")
    return AnswerScores(np.array([np.nanmean(t) for t in per_token]), hits, per_token)


def _wrong_nll(model, tokenizer, rows: list[dict], template: str, batch_size: int, desc: str) -> np.ndarray:
    """(N, M) mean NLL per token of each row's M wrong answers."""
    width = {len(r["perturbed_answer"]) for r in rows}
    if len(width) != 1:
        raise ValueError(f"{desc}: rows hold {sorted(width)} perturbed answers; every row needs the same number.")
    m = width.pop()
    flat = score_answers(model, tokenizer, [r["question"] for r in rows for _ in range(m)],
                         [a for r in rows for a in r["perturbed_answer"]], template, batch_size, desc)
    return flat.nll.reshape(len(rows), m)


def set_values(prefix: str, model, tokenizer, rows: list[dict], template: str, batch_size: int,
               max_new_tokens: int) -> tuple[dict[str, float], np.ndarray, AnswerScores]:
    """One set's values (keys `<prefix>_...`), its per-question truth ratios and its true answers' scores."""
    questions, answers = [r["question"] for r in rows], [r["answer"] for r in rows]
    true = score_answers(model, tokenizer, questions, answers, template, batch_size, f"TOFU {prefix} answers")
    wrong = _wrong_nll(model, tokenizer, rows, template, batch_size, f"TOFU {prefix} perturbed answers")
    greedy = greedy_completions(model, tokenizer, [qa_prompt(tokenizer, q, template) for q in questions],
                                max_new_tokens, batch_size)
    values = {f"{prefix}_Q_A_ROUGE": float(np.mean([tm.rouge_l_recall(g, a) for g, a in zip(greedy, answers)]))}
    if prefix in ("forget", "retain"):
        para = score_answers(model, tokenizer, questions, [r["paraphrased_answer"] for r in rows], template,
                             batch_size, f"TOFU {prefix} paraphrased answers")
        ratios = tm.truth_ratios(para.nll, wrong)
        values |= {f"{prefix}_Q_A_Prob": float(tm.normalized_probability(true.nll).mean()),
                   f"{prefix}_Q_A_PARA_Prob": float(tm.normalized_probability(para.nll).mean()),
                   f"{prefix}_Q_A_PERT_Prob": float(tm.normalized_probability(wrong).mean()),
                   f"{prefix}_Truth_Ratio": (tm.forget_truth_ratio if prefix == "forget" else tm.kept_truth_ratio)(
                       ratios)}
    else:
        ratios = tm.truth_ratios(true.nll, wrong)
        values |= {f"{prefix}_Q_A_Prob_normalised": float(tm.probability_with_options(true.nll, wrong).mean()),
                   f"{prefix}_Truth_Ratio": tm.kept_truth_ratio(ratios)}
    return values, ratios, true


def membership_auc(model, tokenizer, forget: AnswerScores, holdout_rows: list[dict], template: str,
                   batch_size: int) -> float:
    """Min-K% membership AUC of the forget answers (scored: `forget`) against the holdout answers."""
    holdout = score_answers(model, tokenizer, [r["question"] for r in holdout_rows], [r["answer"] for r in holdout_rows],
                            template, batch_size, "TOFU holdout answers")
    return tm.member_auc([tm.min_k_score(t) for t in forget.per_token], [tm.min_k_score(t) for t in holdout.per_token])


def tofu_values(model, tokenizer, sets: dict[str, list[dict]], template: str, batch_size: int,
                max_new_tokens: int = 64, retain_model_ratios: np.ndarray | None = None,
                retain_model_auc: float | None = None) -> tuple[dict, np.ndarray]:
    """Every TOFU value of `model` on `sets` (SETS' prefixes -> rows; with a `holdout` set too, the membership AUC
    `mia_min_k`, and given the retain model's, `privleak`), and its per-question forget truth ratios (what forget
    quality compares with the retain model's)."""
    missing = [p for p in SETS if p not in sets]
    if missing:
        raise ValueError(f"TOFU evaluation: sets {missing} missing; it needs {list(SETS)}.")
    values, forget_ratios = {}, None
    for prefix in SETS:
        found, ratios, true = set_values(prefix, model, tokenizer, sets[prefix], template, batch_size, max_new_tokens)
        values |= found
        if prefix == "forget":
            forget_ratios = ratios
            values["extraction_strength"] = float(np.mean([tm.extraction_strength(h) for h in true.hits]))
            if sets.get("holdout"):
                values["mia_min_k"] = membership_auc(model, tokenizer, true, sets["holdout"], template, batch_size)
                if retain_model_auc is not None:
                    values["privleak"] = tm.privleak(values["mia_min_k"], retain_model_auc)
    values["model_utility"] = tm.model_utility(values)
    if retain_model_ratios is not None:
        values["forget_quality"] = tm.forget_quality(forget_ratios, retain_model_ratios)
    return values, forget_ratios


def recipe_sets(recipe_dir: Path, manifest: dict, limit: int | None) -> dict[str, list[dict]]:
    """TOFU's evaluation sets for a tofu recipe's split: the split's forget questions with their perturbed answers,
    the retain evaluation questions the target learned (TOFU's 400, less any whose author a smaller tier left out),
    real authors, world facts and the split's holdout pairs (other fictitious authors, for the membership AUC); each
    cut to its first `limit` rows (null: all, as TOFU reports)."""
    root = manifest["args"].get("tofu_root")
    learned = {r["question"] for r in read_jsonl(recipe_dir / "retain.jsonl")}
    sets = {"forget": read_set(f"{manifest['split']}_perturbed", root),
            "retain": [r for r in read_set("retain_perturbed", root) if r["question"] in learned],
            "ra": read_set("real_authors_perturbed", root), "wf": read_set("world_facts_perturbed", root),
            "holdout": read_set(f"holdout{manifest['split'].removeprefix('forget')}", root)}
    if not sets["retain"]:
        raise ValueError(f"{recipe_dir}/retain.jsonl holds none of TOFU's retain evaluation questions (its first "
                         f"authors); generate the recipe with --retain_authors 20 or more.")
    return {k: rows[:limit] if limit is not None else rows for k, rows in sets.items()}


def retain_model_reference(recipe_dir: Path, manifest: dict, sets: dict, cfg) -> tuple[np.ndarray | None,
                                                                                       float | None]:
    """The retain model's per-question forget truth ratios and membership AUC, computed once and kept beside it
    (`tofu_reference.json`, keyed by the questions and template); (None, None) when the recipe has no retain model."""
    path = manifest.get("retain_model")
    if not path:
        return None, None
    cache = Path(path) / "tofu_reference.json"
    key = {"template": manifest["template"], "questions": [r["question"] for r in sets["forget"]],
           "holdout": [r["question"] for r in sets["holdout"]]}
    if cache.is_file():
        kept = json.loads(cache.read_text(encoding="utf-8"))
        if kept.get("key") == key:
            return np.asarray(kept["ratios"], dtype=np.float64), kept["mia_min_k"]
    log(f"TOFU: forget truth ratios and membership AUC of the retain model {path}")
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_causal_lm(path, cfg.dtype, device=device, what="retain_model"), load_tokenizer(path)
    _, ratios, true = set_values("forget", model, tokenizer, sets["forget"], manifest["template"], cfg.batch_size,
                                 MAX_NEW_TOKENS)
    auc = membership_auc(model, tokenizer, true, sets["holdout"], manifest["template"], cfg.batch_size)
    cache.write_text(json.dumps({"key": key, "ratios": ratios.tolist(), "mia_min_k": auc}) + "\n", encoding="utf-8")
    return ratios, auc


def tofu_metrics(model, tokenizer, recipe_dir: Path, prompts: list[str], completions: list[list[str]],
                 cfg) -> tuple[dict, list]:
    """The tofu recipe's metrics of one model, under open-unlearning's key names (see the module's docstring), with
    forget quality and privacy leakage against the split's retain model; rows: each forget question's truth ratio."""
    manifest = read_manifest(recipe_dir)
    sets = recipe_sets(Path(recipe_dir), manifest, cfg.recipe_prompts)
    ratios_reference, auc_reference = retain_model_reference(Path(recipe_dir), manifest, sets, cfg)
    values, ratios = tofu_values(model, tokenizer, sets, manifest["template"], cfg.batch_size, MAX_NEW_TOKENS,
                                 ratios_reference, auc_reference)
    values |= {f"{prefix}_questions": len(rows) for prefix, rows in sets.items()}
    rows = [{"kind": "forget", "question": r["question"], "truth_ratio": float(t)}
            for r, t in zip(sets["forget"], ratios)]
    return values, rows
