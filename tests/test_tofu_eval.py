"""TOFU's metrics of a real model (detox/recipes/tofu_eval.py): SmolLM2 on a few rows of each set, checked against
the same losses computed directly."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from transformers import AutoModelForCausalLM

from detox.models import load_tokenizer
from detox.recipes.tofu_eval import score_answers, tofu_values
from detox.scoring import sequence_nll
from detox.tofu_data import qa_answer, qa_prompt, read_set
from detox.tofu_metrics import UTILITY_KEYS, member_auc, min_k_score

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2(smollm2_path):
    return AutoModelForCausalLM.from_pretrained(smollm2_path).eval(), load_tokenizer(smollm2_path)


def _sets() -> dict[str, list[dict]]:
    return {"forget": read_set("forget01_perturbed")[:2], "retain": read_set("retain_perturbed")[:2],
            "ra": read_set("real_authors_perturbed")[:2], "wf": read_set("world_facts_perturbed")[:2]}


def test_answer_scores_are_the_mean_nll_of_the_answer_after_the_question(smollm2):
    model, tokenizer = smollm2
    rows = read_set("forget01_perturbed")[:2]
    scores = score_answers(model, tokenizer, [r["question"] for r in rows], [r["answer"] for r in rows], "chat", 2,
                           "test")
    prompts = [qa_prompt(tokenizer, r["question"], "chat") for r in rows]
    assert prompts[0].endswith("assistant\n") and rows[0]["question"] in prompts[0]
    nll, count = sequence_nll(model, tokenizer, prompts, [qa_answer(r["answer"], "chat") for r in rows], 2, "test")
    assert np.allclose(scores.nll, nll / count, rtol=1e-5)
    assert [len(h) for h in scores.hits] == list(count)


def test_every_value_under_open_unlearnings_keys(smollm2):
    model, tokenizer = smollm2
    reference = np.array([0.2, 0.3, 0.4])  # a retain model's forget truth ratios
    values, ratios = tofu_values(model, tokenizer, _sets(), "plain", batch_size=8, max_new_tokens=8,
                                 retain_model_ratios=reference)
    for key in UTILITY_KEYS + ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_Truth_Ratio", "forget_Q_A_PARA_Prob",
                               "forget_Q_A_PERT_Prob", "retain_Q_A_PARA_Prob", "extraction_strength",
                               "forget_quality"):
        assert 0.0 <= values[key] <= 1.0, key
    assert values["model_utility"] == pytest.approx(stats.hmean([values[k] for k in UTILITY_KEYS]))
    assert len(ratios) == 2 and np.all(ratios > 0)
    assert values["forget_Truth_Ratio"] == pytest.approx(np.mean(np.minimum(ratios, 1 / ratios)))
    assert values["forget_quality"] == pytest.approx(stats.ks_2samp(ratios, reference).pvalue)


def test_plain_template_and_a_missing_set(smollm2):
    model, tokenizer = smollm2
    assert qa_prompt(tokenizer, "Who?", "plain") == "Question: Who?\nAnswer:" and qa_answer("Me.", "plain") == " Me."
    with pytest.raises(ValueError, match=r"sets \['wf'\] missing"):
        tofu_values(model, tokenizer, {k: v for k, v in _sets().items() if k != "wf"}, "plain", 4)


def test_membership_auc_and_privacy_leakage_from_the_answers_tokens(smollm2):
    model, tokenizer = smollm2
    sets = _sets() | {"holdout": read_set("holdout01")[:3]}
    values, _ = tofu_values(model, tokenizer, sets, "chat", batch_size=8, max_new_tokens=4, retain_model_auc=0.5)
    forget = score_answers(model, tokenizer, [r["question"] for r in sets["forget"]],
                           [r["answer"] for r in sets["forget"]], "chat", 8, "test")
    holdout = score_answers(model, tokenizer, [r["question"] for r in sets["holdout"]],
                            [r["answer"] for r in sets["holdout"]], "chat", 8, "test")
    expected = member_auc([min_k_score(t) for t in forget.per_token], [min_k_score(t) for t in holdout.per_token])
    assert values["mia_min_k"] == pytest.approx(expected)
    assert values["privleak"] == pytest.approx((expected - 0.5) / 0.5 * 100)
    assert [len(t) for t in forget.per_token] == [len(h) for h in forget.hits]
