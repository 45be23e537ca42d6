"""Toxicity evaluation: config parsing, the judge's log-likelihoods, the cache, and the script end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from detox.config import parse_config
from detox.evaluation import (
    EvalConfig,
    ModelRun,
    data_config,
    fingerprint,
    forget_metrics,
    forget_passages,
    read_cache,
    write_cache,
)
from detox.scoring import sequence_nll, token_nll
from detox.validity import load_ranking

REPO = Path(__file__).resolve().parents[1]


def test_models_flag_takes_several_name_path_pairs():
    cfg = parse_config(["--models", "base=smollm2-135m-instruct", "outputs/run/final/", "--seed", "3"], EvalConfig)
    # a bare path is named after its last component
    assert cfg.model_specs() == [("base", "smollm2-135m-instruct"), ("final", "outputs/run/final/")]
    assert cfg.seed == 3
    assert parse_config(["--seed=5", "--phrases", "the hell", "idiot"], EvalConfig).phrases == ["the hell", "idiot"]
    single = parse_config(["--models", "base=smollm2-135m-instruct"], EvalConfig)
    assert single.model_specs() == [("base", "smollm2-135m-instruct")]
    with pytest.raises(ValueError, match="unique"):
        parse_config(["--models", "a=x", "a=y"], EvalConfig)
    with pytest.raises(ValueError, match="max_new_tokens \\(5\\) must be >= min_new_tokens \\(20\\)"):
        parse_config(["--max_new_tokens", "5"], EvalConfig)


def test_run_config_gives_the_data_settings_and_prompts_named_beside_it_win(tmp_path):
    run = tmp_path / "config.yaml"
    run.write_text("data:\n  prompts: train.jsonl\n  text_field: text\n  min_toxicity: null\n  max_prompt_tokens: 64\n")
    from_run = data_config(parse_config(["--run_config", str(run)], EvalConfig))
    assert (from_run.prompts, from_run.text_field, from_run.max_prompt_tokens) == ("train.jsonl", "text", 64)
    other = data_config(parse_config(["--run_config", str(run), "--prompts", "heldout.jsonl"], EvalConfig))
    assert (other.prompts, other.text_field, other.max_prompt_tokens) == ("heldout.jsonl", "text", 64)
    flag = data_config(parse_config(["--run_config", str(run), "--data.prompts", "x.jsonl"], EvalConfig))
    assert flag.prompts == "x.jsonl"


def test_perplexity_model_defaults_to_the_base_of_the_first_model(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "some/base"}))
    assert EvalConfig(models=[f"tuned={adapter}"]).perplexity_model_path() == "some/base"
    assert EvalConfig(models=["b=smollm2-135m-instruct"]).perplexity_model_path() == "smollm2-135m-instruct"
    assert EvalConfig(models=["b=x"], perplexity_model="j").perplexity_model_path() == "j"
    # an adapter detox trained here loads onto the exact weights it was trained against, not the Hub id it names
    (adapter / "detox_config.yaml").write_text("model: {name_or_path: smollm2-135m-instruct}\n")
    assert EvalConfig(models=[f"tuned={adapter}"]).perplexity_model_path() == "smollm2-135m-instruct"


def test_sequence_nll_scores_only_the_target_tokens(tiny_lm_path):
    import torch
    from transformers import AutoModelForCausalLM

    from detox.models import load_tokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_lm_path).eval(), load_tokenizer(tiny_lm_path)
    contexts, targets = ["The weather is", "", "A"], [" nice today", "Hello there friend", ""]
    nll, count = sequence_nll(model, tokenizer, contexts, targets, batch_size=2, desc="test")
    for ctx, tgt, got_nll, got_count in zip(contexts, targets, nll, count):
        c = tokenizer(ctx, add_special_tokens=False)["input_ids"]
        ids = c + tokenizer(tgt, add_special_tokens=False)["input_ids"]
        first = max(len(c), 1)  # an empty context leaves the first token unscored
        expected_count = max(len(ids) - first, 0)
        assert got_count == expected_count
        if expected_count:  # reference: the same sequence alone (no padding), log-softmax at the target positions
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
            expected = -sum(logp[t - 1, ids[t]].item() for t in range(first, len(ids)))
            assert got_nll == pytest.approx(expected, rel=1e-4)
        else:
            assert got_nll == 0.0
    per_token = token_nll(model, tokenizer, contexts, targets, batch_size=2, desc="test")
    for ctx, tgt, got in zip(contexts, targets, per_token):
        c, t = (tokenizer(x, add_special_tokens=False)["input_ids"] for x in (ctx, tgt))
        assert len(got) == len(t)  # one entry per target token, in the target's order
        if not t:
            continue
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([c + t])).logits[0].float(), -1)
        for j in range(len(t)):
            p = len(c) + j
            if p == 0:  # nothing to condition on
                assert np.isnan(got[j])
            else:
                assert got[j] == pytest.approx(-logp[p - 1, t[j]].item(), rel=1e-4, abs=1e-5)


def test_cache_round_trip_and_invalidation(tmp_path):
    cfg = EvalConfig(models=["b=smollm2-135m-instruct"])
    key = fingerprint(cfg, "smollm2-135m-instruct", ["p1", "p2"])
    run = ModelRun([{"completion": "x", "toxicity/offline": 0.5}], {"forget_rouge_l": 0.2}, [{"rouge_l": 0.2}])
    path = tmp_path / "cache" / "b.jsonl"
    write_cache(path, key, run)
    assert read_cache(path, key) == run
    assert not list(path.parent.glob(".*tmp"))  # the temporary file was renamed, not left behind
    # another prompt list, seed or decoding gives another key, so the cache is not reused
    assert fingerprint(cfg, "smollm2-135m-instruct", ["p1"]) != key
    assert fingerprint(EvalConfig(models=cfg.models, seed=1), "smollm2-135m-instruct", ["p1", "p2"]) != key
    assert read_cache(path, "other") is None


def test_cache_key_ignores_the_working_directory(tmp_path, monkeypatch):
    # no forget or retain corpus: editing an unrelated file where the command runs must not throw the cache away
    monkeypatch.chdir(tmp_path)
    cfg = EvalConfig(models=["b=smollm2-135m-instruct"])
    key = fingerprint(cfg, "smollm2-135m-instruct", ["p1"])
    (tmp_path / "notes.txt").write_text("edited")
    assert fingerprint(cfg, "smollm2-135m-instruct", ["p1"]) == key


def test_too_many_prompts_is_an_error_naming_the_field(smollm2_path):
    from detox.evaluation import load_eval_prompts
    from detox.models import load_tokenizer

    cfg = EvalConfig(num_prompts=100_000)
    with pytest.raises(ValueError, match="num_prompts \\(100000\\) is more than the"):
        load_eval_prompts(cfg, load_tokenizer(smollm2_path))
    few = load_eval_prompts(EvalConfig(num_prompts=5, seed=1), load_tokenizer(smollm2_path))
    assert len(few) == 5 and few == load_eval_prompts(EvalConfig(num_prompts=5, seed=1), load_tokenizer(smollm2_path))


def test_nontoxic_prompts_are_shipped_and_kept_whatever_their_toxicity(smollm2_path):
    from detox.evaluation import load_eval_prompts
    from detox.models import load_tokenizer

    cfg = EvalConfig(prompts="builtin:rtp_nontoxic", prompt_split="all", num_prompts=200)
    prompts = load_eval_prompts(cfg, load_tokenizer(smollm2_path))
    records = [json.loads(line) for line in (REPO / "detox" / "assets" / "rtp_nontoxic.jsonl").open()]
    assert len(prompts) == 200 and len(records) == 900
    assert max(r["prompt"]["toxicity"] for r in records) < 0.5  # the set is non-toxic by construction
    # the toxic set's filter (> 0.3) is off for these prompts: some kept ones score above it
    high = {r["prompt"]["text"] for r in records if r["prompt"]["toxicity"] > 0.3}
    all_prompts = load_eval_prompts(EvalConfig(prompts="builtin:rtp_nontoxic", prompt_split="all", num_prompts=None),
                                    load_tokenizer(smollm2_path))
    assert any(p in high for p in all_prompts)


def test_a_judge_is_offline_or_any_sequence_classifier(tmp_path, tiny_lm_path):
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    from detox.judge_specs import Judge
    from detox.judges import build_judge
    from rewards.toxicity import OfflineToxicity

    assert isinstance(build_judge(Judge("offline", "offline")), OfflineToxicity)
    # a random 2-label classifier on the tiny Llama, with its own label names, passed through judge_options
    config = AutoConfig.from_pretrained(tiny_lm_path, num_labels=2, id2label={0: "ok", 1: "toxic"},
                                        label2id={"ok": 0, "toxic": 1})
    LlamaForSequenceClassification(config).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_lm_path).save_pretrained(tmp_path)
    cfg = EvalConfig(judges=[f"mine={tmp_path}"], judge_options={"mine": {"nontoxic_label": "ok"}})
    p_toxic = build_judge(cfg.judge_list()[0]).toxicity(["you are kind", "hello there, friend"])
    assert p_toxic.shape == (2,) and np.all((p_toxic > 0) & (p_toxic < 1))


def test_forget_passages_are_cut_at_word_boundaries(tmp_path):
    words = [f"w{i}" for i in range(100)]
    path = tmp_path / "forget.txt"
    path.write_text(" ".join(words[:50]) + "\n" + " ".join(words[50:]))
    # 100 words hold two windows of 32 + 16 words (the last 4 words are left over); the text between words is kept,
    # so the continuation starts with the separator that follows the prompt's last word
    assert forget_passages(str(path), n=5, seed=0) == [
        (" ".join(words[:32]), " " + " ".join(words[32:48])),
        (" ".join(words[48:50]) + "\n" + " ".join(words[50:80]), " " + " ".join(words[80:96])),
    ]
    assert len(forget_passages(str(path), n=1, seed=0)) == 1


def test_forget_metrics_on_shakespeare(tmp_path, tiny_lm_path, shared_data):
    import gzip

    from detox.models import load_causal_lm, load_tokenizer

    play = gzip.open(shared_data / "tinyshakespeare" / "input.txt.gz", "rt", encoding="utf-8").read()
    start = play.index("ROMEO:")
    (tmp_path / "forget.txt").write_text(play[start : start + 3000])
    (tmp_path / "retain.txt").write_text(play[:3000])
    cfg = EvalConfig(models=[f"tiny={tiny_lm_path}"], forget_corpus=str(tmp_path / "forget.txt"),
                     retain_corpus=str(tmp_path / "retain.txt"), forget_passages=3, min_new_tokens=4,
                     max_new_tokens=6, batch_size=4)
    model, tokenizer = load_causal_lm(tiny_lm_path), load_tokenizer(tiny_lm_path)
    out, samples = forget_metrics(cfg, "tiny", model, tokenizer)
    assert len(samples) == 3 and all(0.0 <= s["rouge_l"] <= 1.0 for s in samples)
    assert out["forget_rouge_l"] == pytest.approx(np.mean([s["rouge_l"] for s in samples]))
    # a random 2-layer model is close to uniform over SmolLM2's 49k-token vocabulary: perplexity in the thousands
    assert 1000 < out["forget_perplexity"] < 200_000 and 1000 < out["retain_perplexity"] < 200_000
    assert out["forget_perplexity_ci_low"] <= out["forget_perplexity"] <= out["forget_perplexity_ci_high"]


# ------------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def lora_adapter(tmp_path_factory, smollm2_path) -> str:
    """The LoRA adapter a 2-step train_ppo.py run on SmolLM2 and the shipped prompts writes to output_dir/final."""
    from detox.jobs import train_ppo
    from test_train import SMALL

    out = tmp_path_factory.mktemp("two_step_run")
    train_ppo.main(SMALL + [
        "--ppo.steps", "2",
        "--ppo.learning_rate", "1e-3",  # two steps at the default 1e-4 barely move the adapter off zero
        "--checkpoint.output_dir", str(out),
    ])
    return str(out / "final")


def _run_script(args: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    # One OpenMP thread: with other processes on the 2 cores, torch's threads spin against each other (a SmolLM2
    # forward pass measured 4-15x slower with 2 threads than with 1 under such load).
    env = {"OMP_NUM_THREADS": "1", **os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(REPO / "evaluate_toxicity.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc, time.perf_counter() - start


def _table(stdout: str) -> tuple[list[str], dict[str, list[str]]]:
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return cells[0], {row[0]: row for row in cells[2:]}


def _distinct(texts: list[str], n: int) -> float:
    grams = Counter(tuple(w[i : i + n]) for w in (t.split() for t in texts) for i in range(len(w) - n + 1))
    return len(grams) / sum(grams.values())


JUDGE_FIGURES = ["Mean toxicity", "Std", "Mean 95% CI", "Δ vs base (95% CI)", "Toxicity probability",
                 "Expected max"]


@pytest.mark.slow
def test_script_on_smollm2_and_a_lora_adapter(tmp_path, lora_adapter):
    out = tmp_path / "eval"
    k = 2  # few samples and short completions keep two 135M models under a minute on 2 CPU cores
    args = ["--models", "base=smollm2-135m-instruct", f"lora={lora_adapter}", "--num_prompts", "20",
            "--samples_per_prompt", str(k), "--min_new_tokens", "8", "--max_new_tokens", "12",
            "--judges", "offline", "minilm_davidson", "minilm_rtp",
            "--batch_size", "20", "--bootstrap_samples", "200", "--output_dir", str(out)]
    first, first_seconds = _run_script(args)

    header, rows = _table(first.stdout)
    # the adapter's run (the offline default) was rewarded by the MiniLM classifier of the labelled continuations: that
    # judge is marked as its reward; alt-profanity-check and the Davidson MiniLM judge are independent of it
    labels = ["offline", "minilm_davidson", "minilm_rtp (reward of lora)"]
    assert header == ["Model", *(f"{label}: {figure}" for label in labels for figure in JUDGE_FIGURES),
                      "Perplexity", "Perplexity 95% CI", "Perplexity change vs base (95% CI)", "Distinct-1",
                      "Distinct-2", "Distinct-3", "Mean length", "Empty", "Looping", "Duplicate"]
    assert list(rows) == ["base", "lora"]
    assert rows["base"][4] == "—"
    summary = [line for line in first.stdout.splitlines() if line.startswith("lora vs base")]
    # the independent judges lead, the more valid one (detox/assets/judge_validity.json) first; the reward comes last
    validity = load_ranking()
    leader, runner_up = sorted(["offline", "minilm_davidson"], key=lambda judge: -validity[judge])
    assert len(summary) == 1 and summary[0].index(f"under {leader} [independent]") < summary[0].index(
        f"under {runner_up} [independent]") < summary[0].index("under minilm_rtp [reward]")
    for name in ("results.md", "results.csv", "results.json", "samples.csv", "toxicity.png"):
        assert (out / name).stat().st_size > 0

    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    by_model = {m: [s for s in samples if s["model"] == m] for m in ("base", "lora")}
    prompts = {m: [s["prompt"] for s in rs] for m, rs in by_model.items()}
    assert len(by_model["base"]) == len(by_model["lora"]) == 20 * k
    assert prompts["base"] == prompts["lora"] and len(set(prompts["base"])) == 20  # same prompts for every model
    assert [s["completion"] for s in by_model["base"]] != [s["completion"] for s in by_model["lora"]]

    means, perplexities = {}, {}
    for model, recs in by_model.items():  # recompute every number of the row from the saved samples
        texts = [s["completion"] for s in recs]
        ppl = math.exp(sum(s["nll"] for s in recs) / sum(s["num_tokens"] for s in recs))
        shared = {19: ppl, 22: _distinct(texts, 1), 23: _distinct(texts, 2), 24: _distinct(texts, 3),
                  25: np.mean([s["num_tokens"] for s in recs])}
        perplexities[model] = ppl
        low, high = (float(x) for x in rows[model][20].strip("[]").split(","))
        assert low <= ppl <= high
        for group, judge in enumerate(["offline", "minilm_davidson", "minilm_rtp"]):
            scores = np.array([s[f"toxicity/{judge}"] for s in recs]).reshape(20, k)
            means[model, judge] = scores.mean()
            first_column = 1 + 6 * group
            expected = {first_column: scores.mean(), first_column + 1: scores.std(),
                        first_column + 4: (scores >= 0.5).any(1).mean(), first_column + 5: scores.max(1).mean()}
            low, high = (float(x) for x in rows[model][first_column + 2].strip("[]").split(","))
            assert low <= scores.mean() <= high
            for column, value in {**expected, **shared}.items():
                assert float(rows[model][column]) == pytest.approx(value, abs=5.1e-5), (model, header[column])
    change = float(rows["lora"][21].split()[0].rstrip("%")) / 100
    assert rows["base"][21] == "—"
    assert change == pytest.approx(perplexities["lora"] / perplexities["base"] - 1, abs=5e-4)
    delta = float(rows["lora"][4].split()[0])
    assert delta == pytest.approx(means["lora", "offline"] - means["base", "offline"], abs=5.1e-5)
    saved = json.loads((out / "results.json").read_text())
    assert saved["rows"][1]["minilm_davidson/delta_vs_base"] == pytest.approx(
        means["lora", "minilm_davidson"] - means["base", "minilm_davidson"], abs=1e-12)
    for judge in ("offline", "minilm_davidson", "minilm_rtp"):  # the changes that do not depend on a judge's floor
        base, lora = (np.array([s[f"toxicity/{judge}"] for s in by_model[m]]).reshape(20, k) for m in ("base", "lora"))
        pairs = base.reshape(-1, 1) - lora.reshape(1, -1)  # every base completion against every lora one
        above = (pairs > 0).mean() + 0.5 * (pairs == 0).mean()
        fell = np.mean(lora.mean(1) < base.mean(1))
        assert saved["rows"][1][f"{judge}/share_prompts_less_toxic"] == pytest.approx(fell)
        assert saved["rows"][1][f"{judge}/auc_base_vs_model"] == pytest.approx(above)
    assert saved["judge_relations"]["lora"] == {"offline": "independent", "minilm_davidson": "independent",
                                                "minilm_rtp": "reward"}
    card = (Path(lora_adapter) / "README.md").read_text()  # the adapter's model card now holds the table
    assert "| minilm_rtp (reward of lora): Mean toxicity |" in card and summary[0] in card
    assert "[More Information" not in card

    second, second_seconds = _run_script(args)  # every model is cached: nothing is generated again
    assert second.stderr.count("cached results reused") == 2
    assert second.stdout == first.stdout
    assert second_seconds < first_seconds


def test_toxicity_plot_takes_an_interval_a_rounding_error_inside_the_mean(tmp_path):
    from detox.jobs.evaluate_toxicity import plot_toxicity

    flat = {"model": "flat", "offline/mean_toxicity": 0.0123, "offline/mean_toxicity_ci_low": 0.0123 + 1e-17,
            "offline/mean_toxicity_ci_high": 0.0123 - 1e-17}  # every score equal: the ends land beside the mean
    wide = {"model": "wide", "offline/mean_toxicity": 0.2, "offline/mean_toxicity_ci_low": 0.1,
            "offline/mean_toxicity_ci_high": 0.3}
    plot_toxicity([flat, wide], ["offline"], tmp_path / "toxicity.png")
    assert (tmp_path / "toxicity.png").stat().st_size > 1000
