"""Forget-set rewards on real text: tinyshakespeare's Romeo and Juliet is the forget set, Coriolanus (the first play
in the file) and RealToxicityPrompts' non-toxic prompts are the unrelated text."""

from __future__ import annotations

import gzip
import json
import os
import pickle

import numpy as np
import pytest
import torch

from benchmarks import forget_reward_selectivity as selectivity
from detox.corpus import read_corpus
from rewards.forget import (
    AnchorTerms,
    ForgetLikelihood,
    ForgetVerbatim,
    likelihood_ratio_penalty,
    pack_context_completion,
)
from rewards.ngram_index import NgramIndex, ngram_hashes
from training_runs import REPO


@pytest.fixture(scope="module")
def plays(shared_data) -> dict[str, list[str]]:
    """Lines of Romeo and Juliet and of Coriolanus.

    Romeo and Juliet is found by its speakers: the longest stretch in which a "ROMEO:" or "JULIET:" speech follows
    the previous one within 400 lines (a stray later "ROMEO:" belongs to a different scene list), up to the end of
    the last speech. Coriolanus opens the file; its first 3000 lines hold no Romeo and Juliet speaker.
    """
    with gzip.open(shared_data / "tinyshakespeare" / "input.txt.gz", "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    hits = [i for i, line in enumerate(lines) if line in ("ROMEO:", "JULIET:")]
    runs, start = [], hits[0]
    for prev, cur in zip(hits, hits[1:] + [None]):
        if cur is None or cur - prev > 400:
            runs.append((start, prev))
            start = cur
    first, last = max(runs, key=lambda r: r[1] - r[0])
    end = lines.index("", last)  # the last speech ends at the next blank line
    return {"romeo_juliet": lines[first:end], "coriolanus": lines[:3000]}


@pytest.fixture(scope="module")
def forget_file(plays, tmp_path_factory):
    path = tmp_path_factory.mktemp("forget") / "romeo_juliet.txt"
    path.write_text("\n".join(plays["romeo_juliet"]), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def verbatim(forget_file, smollm2_path, tmp_path_factory):
    return ForgetVerbatim(corpus=str(forget_file), tokenizer=smollm2_path,
                          cache_dir=str(tmp_path_factory.mktemp("ngram_cache")))


def excerpt(lines: list[str], start: int, count: int) -> str:
    return "\n".join(lines[start:start + count])


# ---- n-gram index -------------------------------------------------------------------------------------------------

def test_ngram_hashes_identify_equal_windows():
    # ids 1 2 3 1 2 3 -> trigram windows (1,2,3) (2,3,1) (3,1,2) (1,2,3): the first and last are the same n-gram
    h = ngram_hashes(np.array([1, 2, 3, 1, 2, 3]), 3)
    assert len(h) == 4 and h[0] == h[3] and len(set(h[:3].tolist())) == 3
    assert len(ngram_hashes(np.array([1, 2]), 3)) == 0  # shorter than n: no windows


def test_share_hand_check():
    index = NgramIndex.from_token_ids([[1, 2, 3, 4]], n=2)  # bigrams (1,2) (2,3) (3,4)
    # [2,3,9]: (2,3) is indexed, (3,9) is not -> 1/2; [4,1]: (4,1) is not -> 0; [7] has no bigram -> 0
    np.testing.assert_allclose(index.share([[2, 3, 9], [4, 1], [7], [1, 2, 3, 4]]), [0.5, 0.0, 0.0, 1.0])


def test_verbatim_excerpt_scores_one_paraphrase_and_other_play_zero(verbatim, plays):
    rj, cor = plays["romeo_juliet"], plays["coriolanus"]
    paraphrase = ("Romeo asks whether the morning is still young, and his cousin says it has just struck nine; "
                  "Romeo answers that sad hours seem long.")
    shares = verbatim.share([excerpt(rj, 1000, 6), excerpt(rj, 3500, 4), paraphrase, excerpt(cor, 500, 6), "Romeo"])
    # a copied passage: every 8-gram but the first (its first token lacks the context it had in the play) matches
    assert shares[0] > 0.95 and shares[1] > 0.95
    assert shares[2] < 0.05 and shares[3] < 0.05  # 8 tokens in a row are almost never shared by chance
    assert shares[4] == 0.0  # fewer than n tokens
    assert verbatim([""] * 2, [excerpt(rj, 1000, 6), paraphrase]) == pytest.approx([-shares[0], -shares[2]])


def test_verbatim_uses_completion_ids_and_checks_their_tokenizer(verbatim, plays, smollm2_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    texts = [excerpt(plays["romeo_juliet"], 2000, 4), excerpt(plays["coriolanus"], 100, 4)]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in texts]
    # EOS is a special token and is dropped, so ids and texts give the same shares
    assert verbatim.share(texts, ids) == pytest.approx(verbatim.share(texts))
    other = ForgetVerbatim(corpus=verbatim.corpus, tokenizer=smollm2_path, cache_dir=verbatim.cache_dir)
    shifted = [[t + 1 for t in row] for row in ids]  # ids from "another tokenizer": they decode to other text
    with pytest.warns(UserWarning, match="re-tokenising"):
        assert other.share(texts, shifted) == pytest.approx(verbatim.share(texts))


def test_batch_of_64_scores_each_completion_as_alone(verbatim, plays):
    """A batch is scored completion by completion: batching changes nothing (its speed is benchmarks/rewards_speed.py's
    business, not a test's)."""
    lines = plays["romeo_juliet"] + plays["coriolanus"]
    batch = [excerpt(lines, 97 * i, 5) for i in range(64)]
    together = verbatim([""] * 64, batch)
    alone = [verbatim([""], [text])[0] for text in batch]
    assert together == pytest.approx(alone)
    assert any(score < 0 for score in together), "Romeo and Juliet excerpts must hit the forget index"


def test_index_save_load_and_cache(verbatim, forget_file, smollm2_path, tmp_path):
    index = verbatim.index
    index.save(tmp_path / "idx")
    loaded = NgramIndex.load(tmp_path / "idx")
    assert np.array_equal(loaded.hashes, index.hashes) and loaded.meta == index.meta and loaded.n == 8
    assert index.meta["tokenizer"] == smollm2_path and len(index.meta["corpus_fingerprint"]) == 64

    cache = tmp_path / "cache"
    ForgetVerbatim(corpus=str(forget_file), tokenizer=smollm2_path, cache_dir=str(cache))
    (npy,) = cache.glob("*.npy")
    built = npy.stat().st_mtime_ns
    ForgetVerbatim(corpus=str(forget_file), tokenizer=smollm2_path, cache_dir=str(cache))
    assert npy.stat().st_mtime_ns == built  # same corpus, n, tokenizer: read from the cache, not rebuilt
    ForgetVerbatim(corpus=str(forget_file), n=4, tokenizer=smollm2_path, cache_dir=str(cache))
    assert len(list(cache.glob("*.npy"))) == 2  # another n is another index


def test_read_corpus_jsonl_dotted_field(shared_data):
    path = str(shared_data / "real-toxicity-prompts" / "nontoxic.jsonl")
    texts = read_corpus(path, "prompt.text")
    assert len(texts) == 900 and all(isinstance(t, str) and t for t in texts)
    with pytest.raises(ValueError, match="text_field 'text' not found in .*nontoxic.jsonl line 1 .*set text_field"):
        read_corpus(path, "text")


def test_read_corpus_saved_dataset_and_offline_hub_id(plays, tmp_path):
    import datasets

    lines = plays["romeo_juliet"][:20]
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": lines})}).save_to_disk(tmp_path / "ds")
    assert read_corpus(str(tmp_path / "ds")) == lines
    if os.environ.get("HF_HUB_OFFLINE") == "1":  # offline, an uncached id must fail fast and say what to give
        with pytest.raises(FileNotFoundError, match="not a local file or directory"):
            read_corpus("detox-tests/no-such-dataset")


def test_verbatim_pickle_round_trip(verbatim, plays):
    verbatim.__name__ = "forget_rj"  # as build_reward names the instance
    texts = [excerpt(plays["romeo_juliet"], 10, 4), excerpt(plays["coriolanus"], 10, 4)]
    clone = pickle.loads(pickle.dumps(verbatim))
    assert clone.__name__ == "forget_rj" and clone([""] * 2, texts) == verbatim([""] * 2, texts)


# ---- anchor terms -------------------------------------------------------------------------------------------------

ANCHORS = {"Romeo": "the young man", "Montague": "the family", "Harry Potter": "Jon Smith", "Harry": "Jon"}


def test_anchor_terms_count_whole_words_case_insensitively():
    anchors = AnchorTerms(ANCHORS)
    texts = ["O Romeo, Romeo! wherefore art thou romeo?", "Romeos and Montagues", "ROMEO.", "nothing here", ""]
    # "Romeos"/"Montagues" are other words (no word boundary after the term), so they do not count
    assert anchors([""] * 5, texts) == [-3.0, 0.0, -1.0, 0.0, 0.0]


def test_anchor_terms_translate_prefers_longest_term(tmp_path):
    path = tmp_path / "anchors.json"
    path.write_text(json.dumps(ANCHORS), encoding="utf-8")
    anchors = AnchorTerms(str(path))
    # "Harry Potter" is one term (longest first), the lone "harry" another; "Montague's" keeps its "'s"
    assert anchors.translate("Harry Potter met harry at Montague's.") == "Jon Smith met Jon at the family's."
    assert anchors.count("Harry Potter met harry") == 2
    clone = pickle.loads(pickle.dumps(anchors))
    assert clone.translate("Romeo") == "the young man" and clone.__name__ == "anchor_terms"


def test_anchor_terms_reject_bad_options(tmp_path):
    with pytest.raises(ValueError, match="non-empty dict"):
        AnchorTerms({})
    with pytest.raises(FileNotFoundError, match="anchor_terms.options.terms"):
        AnchorTerms(str(tmp_path / "missing.json"))


# ---- likelihood ratio ---------------------------------------------------------------------------------------------

def test_likelihood_ratio_penalty_hand_check():
    reinforced = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -3.0, -3.0]])
    reference = torch.tensor([[-1.5, -1.0, -0.5], [-1.0, -1.0, -1.0]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    # row 0: ReLU(diff) = [0.5, 0, (masked)] -> 0.5 over 2 completion tokens = 0.25; row 1: no tokens -> 0
    assert likelihood_ratio_penalty(reinforced, reference, mask).tolist() == [0.25, 0.0]


def test_pack_context_completion_layout():
    input_ids, attention, positions, completion_mask = pack_context_completion([[5, 6], [7]], [[8], [9, 10]], 0)
    assert input_ids.tolist() == [[5, 6, 8, 0], [0, 7, 9, 10]]  # contexts left-padded, completions right-padded
    assert attention.tolist() == [[1, 1, 1, 0], [0, 1, 1, 1]]
    assert positions[1, 1:].tolist() == [0, 1, 2]  # the padded row's first real token is still position 0
    assert completion_mask.tolist() == [[1, 0], [1, 1]]


def _make_adapter(tiny_lm_path: str, path, randomise: bool, seed: int = 0) -> str:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_lm_path),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    if randomise:  # LoRA initialises B to zero; a random B makes the adapted model differ from its base
        for name, param in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.5)
    model.save_pretrained(path)
    return str(path)


PROMPTS = ["O Romeo, Romeo!", "", "The weather today is"]
COMPLETIONS = [" wherefore art thou Romeo?", " Good morrow, cousin.", ""]


def test_identical_reinforced_and_reference_give_exactly_zero(tiny_lm_path, tmp_path):
    reward = ForgetLikelihood(reinforced=_make_adapter(tiny_lm_path, tmp_path / "zero", randomise=False))
    assert reward(PROMPTS, COMPLETIONS) == [0.0, 0.0, 0.0]


def test_batching_padding_and_two_model_path_agree(tiny_lm_path, tmp_path):
    adapter = _make_adapter(tiny_lm_path, tmp_path / "adapter", randomise=True)
    batched = ForgetLikelihood(reinforced=adapter, batch_size=8).penalty(PROMPTS, COMPLETIONS)
    singles = ForgetLikelihood(reinforced=adapter, batch_size=1).penalty(PROMPTS, COMPLETIONS)
    torch.testing.assert_close(batched, singles)  # left/right padding changes nothing
    assert batched[0] > 0 and batched[2] == 0  # a random adapter raises some tokens; an empty completion has none

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_lm_path), adapter).merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    two_models = ForgetLikelihood(reinforced=str(tmp_path / "merged"), reference=tiny_lm_path)
    assert two_models._reference is not None  # a full reinforced model is compared with a separate reference
    torch.testing.assert_close(two_models.penalty(PROMPTS, COMPLETIONS), batched, atol=1e-5, rtol=1e-4)

    no_prompt = ForgetLikelihood(reinforced=adapter, score_prompt_context=False).penalty(PROMPTS, COMPLETIONS)
    assert not torch.allclose(no_prompt[0], batched[0])  # the prompt is context that changes the scores


def test_a_contrast_adapter_is_the_reference(tiny_lm_path, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    forget = _make_adapter(tiny_lm_path, tmp_path / "forget", randomise=True)
    retain = _make_adapter(tiny_lm_path, tmp_path / "retain", randomise=True, seed=1)
    assert ForgetLikelihood(reinforced=forget, reference=forget).penalty(PROMPTS, COMPLETIONS).tolist() == [0, 0, 0]

    contrast = ForgetLikelihood(reinforced=forget, reference=retain)
    assert contrast._reference is None  # one base model carries both adapters
    for name, adapter in (("forget", forget), ("retain", retain)):
        merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_lm_path), adapter)
        merged.merge_and_unload().save_pretrained(tmp_path / f"{name}_merged")
        AutoTokenizer.from_pretrained(tiny_lm_path).save_pretrained(tmp_path / f"{name}_merged")
    two_models = ForgetLikelihood(reinforced=str(tmp_path / "forget_merged"), reference=str(tmp_path / "retain_merged"))
    penalty = contrast.penalty(PROMPTS, COMPLETIONS)
    torch.testing.assert_close(penalty, two_models.penalty(PROMPTS, COMPLETIONS), atol=1e-5, rtol=1e-4)
    against_base = ForgetLikelihood(reinforced=forget).penalty(PROMPTS, COMPLETIONS)
    assert penalty[0] > 0 and not torch.allclose(penalty, against_base)  # the contrast, not the base, is subtracted
    # a full reinforced model against an adapter reference: the adapter is loaded over its own base
    mixed = ForgetLikelihood(reinforced=str(tmp_path / "forget_merged"), reference=retain)
    torch.testing.assert_close(mixed.penalty(PROMPTS, COMPLETIONS), penalty, atol=1e-5, rtol=1e-4)


def test_likelihood_errors_and_pickle(tiny_lm_path, tmp_path):
    with pytest.raises(ValueError, match="options.reference is required"):
        ForgetLikelihood(reinforced=tiny_lm_path)
    with pytest.raises(FileNotFoundError, match="make_reinforced"):
        ForgetLikelihood(reinforced=str(tmp_path / "missing"))
    reward = ForgetLikelihood(reinforced=_make_adapter(tiny_lm_path, tmp_path / "a", randomise=True))
    clone = pickle.loads(pickle.dumps(reward))
    assert clone._model is None  # models are not pickled; they reload from the directories on first use
    assert clone(PROMPTS, COMPLETIONS) == pytest.approx(reward(PROMPTS, COMPLETIONS))


def _windows(lines: list[str], k: int = 8, context: int = 2, completion: int = 3) -> list[tuple[str, str]]:
    """k evenly spaced (prompt, completion) pairs: `context` non-empty lines, then the next `completion` lines."""
    text = [line for line in lines if line.strip()]
    step = (len(text) - context - completion) // k
    return [("\n".join(text[j:j + context]) + "\n", "\n".join(text[j + context:j + context + completion]))
            for j in range(0, k * step, step)]


TRAIN_LINES = 200


@pytest.mark.slow
def test_reinforced_model_penalises_forget_domain(plays, smollm2_path, shared_data, tmp_path):
    from rewards.make_reinforced import main

    rj = plays["romeo_juliet"]
    train = tmp_path / "rj_train.txt"
    train.write_text("\n".join(rj[:TRAIN_LINES]), encoding="utf-8")  # ~1.6k tokens: ~2 epochs in 16 steps of 4 x 48
    main(["--model", smollm2_path, "--corpus", str(train), "--output_dir", str(tmp_path / "reinforced"),
          # shrunk for a 2-core CPU: 16 steps of 4 blocks of 48 tokens, lr 3e-3 (default 5e-4) so that so few steps
          # already move the model. With 12 steps of 32-token blocks held-out Romeo and Juliet scored only 15%
          # above modern prose (0.49 vs 0.42), too thin a margin to assert
          "--max_steps", "16", "--batch_size", "4", "--max_length", "48", "--learning_rate", "3e-3"])
    assert (tmp_path / "reinforced" / "adapter_model.safetensors").exists()
    config = json.loads((tmp_path / "reinforced" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == os.path.realpath(smollm2_path)

    reward = ForgetLikelihood(reinforced=str(tmp_path / "reinforced"), batch_size=8)
    assert reward._reference is None  # one base model, adapter on/off
    with open(shared_data / "real-toxicity-prompts" / "nontoxic.jsonl", encoding="utf-8") as f:
        modern = [(r["prompt"]["text"], r["continuation"]["text"]) for r in map(json.loads, list(f)[:8])]
    groups = {"trained": _windows(rj[:TRAIN_LINES]), "held_out": _windows(rj[-800:]),
              "coriolanus": _windows(plays["coriolanus"]), "modern": modern}
    mean = {name: reward.penalty(*zip(*pairs)).mean().item() for name, pairs in groups.items()}
    print(f"mean forget_likelihood penalties: {mean}")
    # Lines it was trained on are memorised; held-out Romeo and Juliet (its last 800 lines, never trained on) shares
    # names and style with them. Another play gains from the learnt Shakespearean style too, so the held-out margin
    # over Coriolanus is nil after 16 steps and not asserted; modern prose gains least. Measured with this test:
    # trained 2.24, held-out 0.48, Coriolanus 0.50, modern 0.31. Any text scores > 0: ReLU keeps the positive half
    # of the noise that fine-tuning adds to every token's log-probability.
    assert mean["trained"] > 2 * mean["coriolanus"], mean
    assert mean["held_out"] > mean["modern"], mean
    assert mean["trained"] > mean["held_out"] > 0, mean


def test_selectivity_benchmark_scores_both_sets(tiny_lm_path, tmp_path):
    assert selectivity.auc(np.array([2.0, 3.0]), np.array([1.0, 2.0])) == pytest.approx(0.875)  # one tie of four pairs
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    records = [{"text": "ROMEO:\nBut soft, what light\n", "completion": "through yonder window breaks?"},
               {"text": "NURSE:\nRomeo, come hither\n", "completion": "to Verona, my lord.\nAnd make haste."}]
    (recipe / "heldout_forget.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    (recipe / "heldout_retain.txt").write_text(
        "MENENIUS:\nWhat work's, my countrymen, in hand?\nWhere go you with bats and clubs?\n\n"
        "CORIOLANUS:\nThanks. What's the matter?\nYou dissentious rogues.\n\nBRUTUS:\nOne line only.\n",
        encoding="utf-8")
    forget = _make_adapter(tiny_lm_path, recipe / "forget", randomise=True)
    _make_adapter(tiny_lm_path, recipe / "retain", randomise=True, seed=1)
    result = selectivity.main(["--recipe_dir", str(recipe), "--rewards", f"base={forget}", "contrast=forget:retain",
                               "same=forget:forget", "--bootstrap_samples", "50"])
    assert result["counts"] == {"play": 2, "other plays": 2}  # BRUTUS's one-line speech has no continuation
    rows = {row["variant"]: row for row in result["rows"]}
    assert rows["base"]["play"]["mean"] > 0 and rows["contrast"]["play"]["mean"] != rows["base"]["play"]["mean"]
    assert rows["same"]["play"]["mean"] == 0 and rows["same"]["auc"] == 0.5  # all ties: blind to the play
    with pytest.raises(SystemExit, match="NAME=REINFORCED"):
        selectivity.main(["--recipe_dir", str(recipe), "--rewards", "forget"])
