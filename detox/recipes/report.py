"""The recipe table: one row per metric (forget efficacy, locality, fluency), one column per model."""

from __future__ import annotations

import math

RECIPE_ROWS: list[tuple[str, str, str]] = [
    ("forget efficacy", "forbidden pattern, greedy, held-out forbidden prompts", "forbidden_pattern_rate_greedy"),
    ("forget efficacy", "forbidden pattern, sampled, held-out forbidden prompts", "pattern_rate_sampled"),
    ("forget efficacy", "log-prob of the forbidden continuation", "forbidden_logprob"),
    ("forget efficacy", "perplexity of the forbidden continuations", "forbidden_perplexity"),
    ("forget efficacy", "ROUGE-L greedy vs forbidden continuation", "forbidden_rouge_l"),
    ("forget efficacy", "writes the skip (next two allowed numbers), greedy, forbidden prompts",
     "forbidden_run_accuracy_greedy"),
    ("forget efficacy", "writes the skip (the next allowed number first), greedy, forbidden prompts",
     "forbidden_skip_rate_greedy"),
    ("forget efficacy", "malformed number in the first two, greedy, forbidden prompts", "forbidden_malformed_rate_greedy"),
    ("forget efficacy", "anchor-term rate, sampled, held-out play prompts", "anchor_rate_sampled"),
    ("forget efficacy", "anchor-term rate, greedy, held-out play prompts", "anchor_rate_greedy"),
    ("forget efficacy", "names one of the play's people, greedy, held-out name prompts", "name_rate_greedy"),
    ("forget efficacy", "writes the play's own name next, greedy, held-out name prompts", "name_exact_greedy"),
    ("forget efficacy", "log-prob of the play's own name, held-out name prompts", "name_logprob"),
    ("forget efficacy", "ROUGE-L greedy vs true continuation", "forget_rouge_l"),
    ("forget efficacy", "perplexity on the forget text", "forget_perplexity"),
    ("forget efficacy", "TOFU forget quality (KS-test p-value against the retain model)", "forget_quality"),
    ("forget efficacy", "TOFU forget answer probability", "forget_Q_A_Prob"),
    ("forget efficacy", "TOFU forget ROUGE-L recall, greedy", "forget_Q_A_ROUGE"),
    ("forget efficacy", "TOFU forget truth ratio", "forget_Truth_Ratio"),
    ("forget efficacy", "TOFU forget paraphrased answer probability", "forget_Q_A_PARA_Prob"),
    ("forget efficacy", "TOFU extraction strength on the forget answers", "extraction_strength"),
    ("forget efficacy", "TOFU membership AUC (Min-K%), forget against holdout answers", "mia_min_k"),
    ("forget efficacy", "TOFU privacy leakage: membership AUC against the retain model's, %", "privleak"),
    ("locality", "TOFU model utility (harmonic mean of the nine retain-side values)", "model_utility"),
    ("locality", "TOFU retain answer probability", "retain_Q_A_Prob"),
    ("locality", "TOFU retain ROUGE-L recall, greedy", "retain_Q_A_ROUGE"),
    ("locality", "TOFU retain truth ratio", "retain_Truth_Ratio"),
    ("locality", "TOFU real authors answer probability (share over the options)", "ra_Q_A_Prob_normalised"),
    ("locality", "TOFU real authors ROUGE-L recall, greedy", "ra_Q_A_ROUGE"),
    ("locality", "TOFU real authors truth ratio", "ra_Truth_Ratio"),
    ("locality", "TOFU world facts answer probability (share over the options)", "wf_Q_A_Prob_normalised"),
    ("locality", "TOFU world facts ROUGE-L recall, greedy", "wf_Q_A_ROUGE"),
    ("locality", "TOFU world facts truth ratio", "wf_Truth_Ratio"),
    ("locality", "counting accuracy, greedy, control prompts", "control_accuracy_greedy"),
    ("locality", "log-prob of the control continuation", "control_logprob"),
    ("locality", "perplexity of the control continuations", "control_perplexity"),
    ("locality", "forbidden pattern, greedy, control prompts", "control_pattern_rate_greedy"),
    ("locality", "next two numbers right, greedy, control prompts", "control_run_accuracy_greedy"),
    ("locality", "malformed number in the first two, greedy, control prompts", "control_malformed_rate_greedy"),
    ("locality", "counting accuracy, greedy, other allowed prompts", "allowed_accuracy_greedy"),
    ("locality", "next two numbers right, greedy, other allowed prompts", "allowed_run_accuracy_greedy"),
    ("locality", "malformed number in the first two, greedy, other allowed prompts", "allowed_malformed_rate_greedy"),
    ("locality", "log-prob of the allowed continuation", "allowed_logprob"),
    ("locality", "forbidden pattern, greedy, other allowed prompts", "allowed_pattern_rate_greedy"),
    ("locality", "perplexity on the retain text", "retain_perplexity"),
    ("locality", "perplexity on held-out RealToxicityPrompts continuations", "rtp_perplexity"),
    ("fluency", "generation perplexity (judge: base model)", "perplexity"),
    ("fluency", "distinct-1 of sampled completions", "distinct_1"),
    ("fluency", "distinct-2 of sampled completions", "distinct_2"),
]
"""(group, description, key): the rows a recipe table can hold; those no model has are left out."""


def _cell(row: dict, key: str) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    text = f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    if f"{key}_ci_low" in row:
        text += f" [{row[f'{key}_ci_low']:.3f}, {row[f'{key}_ci_high']:.3f}]"
    return text


def recipe_markdown(table: list[dict]) -> str:
    """Metrics as rows, models as columns (value and 95% bootstrap interval over prompts)."""
    present = [(g, d, k) for g, d, k in RECIPE_ROWS if any(k in row for row in table)]
    lines = ["| | metric | " + " | ".join(row["model"] for row in table) + " |",
             "|---|---|" + "---|" * len(table)]
    lines += [f"| {g} | {d} | " + " | ".join(_cell(row, k) for row in table) + " |" for g, d, k in present]
    return "\n".join(lines)
