"""Rewards: literal strings for each component, pickle round trips, real classifiers on real tweets, the composer."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from detox.config import RewardComponentConfig as Component
from rewards import REWARD_REGISTRY, RewardComposer, RewardError, build_reward
from rewards.custom import CallableReward, load_callable
from rewards.phrases import LearnedPhraseReward, PhraseReward, join_normalized, normalize

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def fixtures_on_path(monkeypatch):
    """Makes tests/reward_fixtures.py importable as `reward_fixtures`, whatever pytest's import mode."""
    monkeypatch.syspath_prepend(str(TESTS))


def fixture_component(function: str, **fields) -> Component:
    kwargs = fields.pop("kwargs", None)
    options = {"path": f"reward_fixtures:{function}", **({"kwargs": kwargs} if kwargs else {})}
    return Component(type="callable", name=fields.pop("name", function), options=options, **fields)


# ---------------------------------------------------------------- registry


def test_import_rewards_stays_light():
    code = "import sys, rewards; print(sorted({'torch', 'transformers', 'sklearn'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=TESTS.parent, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_type_lists_valid_names():
    with pytest.raises(ValueError, match="Valid types are") as info:
        build_reward(Component(type="toxic"))
    assert all(name in str(info.value) for name in REWARD_REGISTRY)


def test_unknown_option_lists_accepted_options():
    with pytest.raises(ValueError, match="Accepted options: .*'phrases'"):
        build_reward(Component(type="phrase", options={"phrase": ["x"]}))


def test_built_reward_takes_the_component_name_and_refuses_a_device_it_lacks():
    reward = build_reward(Component(type="phrase", name="no_swearing", options={"phrases": ["darn"]}))
    assert reward.__name__ == "no_swearing"
    assert build_reward(Component(type="phrase", options={"phrases": ["darn"]})).__name__ == "phrase"
    with pytest.raises(ValueError, match="runs on CPU"):
        build_reward(Component(type="phrase", options={"phrases": ["x"]}, device="cuda"))


# ---------------------------------------------------------------- phrases


def test_normalize_folds_unicode_case_punctuation_and_spacing():
    # fullwidth letters (NFKC), "ß" (casefold -> "ss"), "-" and "!!" (non-word), a tab and double spaces (runs)
    assert normalize("ＳＩＸＴＹ-Nine!!\t  Straße") == "sixty nine strasse"
    assert normalize("k1ll y0u $ucker @ss", leetspeak=True) == "kill you sucker ass"
    assert normalize("k1ll", leetspeak=False) == "k1ll"


def test_phrase_count_and_any_modes():
    prompts = ["", "", "", ""]
    completions = ["Darn it, DARN it!", "dar n", "darned", "well... darn"]
    counted = PhraseReward(phrases=["darn"])(prompts, completions)
    assert counted == [-2.0, 0.0, 0.0, -1.0]  # "darned" is a different word: phrases match whole words only
    assert PhraseReward(phrases=["darn"], mode="any")(prompts, completions) == [-1.0, 0.0, 0.0, -1.0]


def test_phrase_spanning_the_prompt_boundary_counts():
    reward = PhraseReward(phrases=["sixty nine"])
    # starts in the prompt, ends in the completion: the policy completed the phrase
    assert reward(["… sixty"], [" nine thousand"]) == [-1.0]
    # wholly inside the prompt: the policy did not write it
    assert reward(["sixty nine"], [" apples"]) == [0.0]
    # a word split across the boundary joins like the whole text would
    assert reward(["six"], ["ty nine"]) == [-1.0]
    assert join_normalized("… sixty ", " nine") == (" sixty nine", 7)


def test_phrase_leetspeak_and_regex():
    prompts = [""] * 3
    completions = ["you l0s3r", "LOSER!!!", "looooser"]
    assert PhraseReward(phrases=["loser"])(prompts, completions) == [0.0, -1.0, 0.0]
    assert PhraseReward(phrases=["loser"], leetspeak=True)(prompts, completions) == [-1.0, -1.0, 0.0]
    # regexes see the normalised text: lowercase, no punctuation
    assert PhraseReward(regexes=[r"\blo+ser\b"])(prompts, completions) == [0.0, -1.0, -1.0]


def test_phrase_option_errors():
    with pytest.raises(ValueError, match="not a valid regex"):
        PhraseReward(regexes=["(unclosed"])
    with pytest.raises(ValueError, match="needs options.phrases or options.regexes"):
        PhraseReward()
    with pytest.raises(ValueError, match="mode 'all'"):
        PhraseReward(phrases=["x"], mode="all")


def test_phrases_from_a_file(tmp_path):
    (tmp_path / "phrases.txt").write_text("darn\n\nheck\n")
    assert PhraseReward(phrases=str(tmp_path / "phrases.txt"))([""], ["heck, darn"]) == [-2.0]


# ---------------------------------------------------------------- learned phrases

FORBIDDEN = ["kill yourself", "go kill yourself", "you should kill yourself", "just kill yourself already",
             "why don't you kill yourself", "kill yourself now"]
ALLOWED = ["have a nice day", "kill the process and restart it", "tell yourself you can do it",
           "you should treat yourself", "the killer whale swam away", "believe in yourself", "go to the store now",
           "why don't you come over"]


@pytest.fixture(scope="module")
def learned() -> LearnedPhraseReward:
    return LearnedPhraseReward(forbidden=FORBIDDEN, allowed=ALLOWED)


def test_learned_phrase_catches_an_unseen_variant(learned):
    variants = ["go kil yourslef", "KILL. YOUR. SELF."]  # misspelt, and punctuated, neither in the training list
    benign = ["go tell yourself a story", "have a good day"]
    scores = learned([""] * 4, variants + benign)
    assert max(scores[:2]) < min(scores[2:])
    assert all(-1.0 <= s <= 0.0 for s in scores)


def test_learned_phrase_prompt_tail(learned, tmp_path):
    # only the completion is scored by default; with the prompt's tail the classifier sees what " now" continues
    prompts, completions = ["you should just go kill yourself"], [" now"]
    tail = LearnedPhraseReward.load(learned.save(tmp_path), prompt_tail_chars=30)
    assert tail(prompts, completions)[0] < learned(prompts, completions)[0] - 0.3  # measured -0.77 vs -0.24


def test_learned_phrase_save_load_without_pickle(learned, tmp_path):
    learned.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "weights.npz"]
    np.load(tmp_path / "weights.npz", allow_pickle=False)  # raises if any array needed unpickling
    loaded = build_reward(Component(type="learned_phrase", options={"model_path": str(tmp_path)}))
    texts = ["go kil yourslef", "have a good day", ""]
    assert loaded([""] * 3, texts) == learned([""] * 3, texts)


def test_learned_phrase_errors(tmp_path):
    with pytest.raises(ValueError, match="model_path or forbidden"):
        LearnedPhraseReward(forbidden=FORBIDDEN, allowed=ALLOWED, model_path=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="config.json and weights.npz"):
        LearnedPhraseReward(model_path=str(tmp_path))
    with pytest.raises(ValueError, match="both classes"):
        LearnedPhraseReward(forbidden=FORBIDDEN, allowed=[])


# ---------------------------------------------------------------- toxicity (HF classifier)


@pytest.fixture(scope="module")
def davidson(shared_data) -> Path:
    return shared_data / "davidson-hate-offensive" / "labeled_data.csv.gz"


@pytest.fixture(scope="module")
def minilm_classifier(tmp_path_factory, davidson) -> str:
    """A real BertForSequenceClassification (MiniLM encoder, head fitted on 200 tweets: 5-20 s on two cores)."""
    from rewards.minilm_classifier import build_minilm_toxicity_classifier

    return str(build_minilm_toxicity_classifier(tmp_path_factory.mktemp("minilm"), davidson, n_train=200, seed=0))


@pytest.fixture(scope="module")
def held_out_tweets(davidson):
    from rewards.minilm_classifier import load_davidson

    return load_davidson(davidson, 48, seed=1)  # a different draw from the 200 the head was fitted on


def test_toxicity_resolves_labels_by_name(minilm_classifier):
    from rewards.toxicity import ToxicityClassifier

    reward = ToxicityClassifier(model=minilm_classifier)
    assert reward.labels == ["nothate", "hate"]
    assert (reward.nontoxic_index, reward.toxic_index) == (0, 1)
    with pytest.raises(ValueError, match=r"labels \(config.id2label\) are \['nothate', 'hate'\]"):
        ToxicityClassifier(model=minilm_classifier, nontoxic_label="neutral")


def test_toxicity_output_modes_agree(minilm_classifier):
    from rewards.toxicity import ToxicityClassifier

    prompts, completions = ["", ""], ["you are a stupid bitch", "what a lovely morning"]
    by_output = {o: ToxicityClassifier(model=minilm_classifier, output=o) for o in ("logit", "neg_prob", "log_odds")}
    logits = by_output["logit"].logits(completions)  # (2, 2): [nothate, hate]
    np.testing.assert_allclose(by_output["logit"](prompts, completions), logits[:, 0], rtol=1e-5)
    # two-way softmax: log p_nothate - log p_hate = z_nothate - z_hate
    np.testing.assert_allclose(by_output["log_odds"](prompts, completions), logits[:, 0] - logits[:, 1], rtol=1e-5)
    p_toxic = by_output["neg_prob"].toxicity(completions)
    np.testing.assert_allclose(by_output["neg_prob"](prompts, completions), -p_toxic, rtol=1e-5)
    np.testing.assert_allclose(p_toxic, 1 / (1 + np.exp(logits[:, 0] - logits[:, 1])), rtol=1e-5)


def test_toxicity_separates_real_toxic_and_clean_tweets(minilm_classifier, held_out_tweets):
    from sklearn.metrics import roc_auc_score

    reward = build_reward(Component(type="toxicity", options={"model": minilm_classifier}, batch_size=16))
    texts, toxic = held_out_tweets
    scores = np.asarray(reward([""] * len(texts), texts))
    assert scores[toxic == 1].mean() < scores[toxic == 0].mean()
    assert roc_auc_score(toxic, -scores) > 0.75  # ~0.9 measured on larger held-out draws


def test_toxicity_scores_prompt_only_when_asked(minilm_classifier):
    from rewards.toxicity import ToxicityClassifier

    prompts, completions = ["fuck you, you dumb bitch."], [" Have a nice day."]
    alone = ToxicityClassifier(model=minilm_classifier)(prompts, completions)
    joined = ToxicityClassifier(model=minilm_classifier, score_prompt=True)(prompts, completions)
    assert joined[0] < alone[0]


def test_toxicity_pickle_drops_the_model(minilm_classifier):
    from rewards.toxicity import ToxicityClassifier

    reward = ToxicityClassifier(model=minilm_classifier)
    before = reward([""], ["you idiot"])
    blob = pickle.dumps(reward)
    assert len(blob) < 10_000  # the 90 MB model is reloaded on first use, not shipped
    assert pickle.loads(blob)([""], ["you idiot"]) == pytest.approx(before, rel=1e-6)


def test_toxicity_unreachable_hub_fails_fast(monkeypatch):
    from detox.hub import HubUnreachableError
    from rewards.toxicity import ToxicityClassifier

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(HubUnreachableError, match="rewards\\[\\].options.model"):
        ToxicityClassifier(model="detox-tests/no-such-classifier")
    assert time.perf_counter() - start < 5


# ---------------------------------------------------------------- toxicity (offline)


def test_offline_toxicity_matches_human_labels(davidson):
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from rewards.toxicity import OfflineToxicity

    rows = pd.read_csv(davidson).sample(500, random_state=0)
    p_toxic = OfflineToxicity().toxicity(rows["tweet"].tolist())
    assert roc_auc_score(rows["class"] < 2, p_toxic) > 0.8  # class 0 hate / 1 offensive vs 2 neither


def test_offline_toxicity_outputs():
    from rewards.toxicity import OfflineToxicity

    completions = ["you are a fucking idiot", "have a lovely day"]
    p = OfflineToxicity().toxicity(completions)
    assert p[0] > 0.5 > p[1]
    logit = OfflineToxicity(output="logit")(["", ""], completions)
    clipped = np.clip(p, 1e-6, 1 - 1e-6)  # the profanity model is near-certain on the first text
    np.testing.assert_allclose(logit, np.log(1 - clipped) - np.log(clipped), rtol=1e-6)
    assert OfflineToxicity(output="log_odds")(["", ""], completions) == logit
    np.testing.assert_allclose(OfflineToxicity(output="neg_prob")(["", ""], completions), -p)
    reward = pickle.loads(pickle.dumps(build_reward(Component(type="offline_toxicity", name="swears"))))
    assert reward.__name__ == "swears" and reward(["", ""], completions) == logit


# ---------------------------------------------------------------- callable


def test_callable_loads_binds_kwargs_and_pickles(fixtures_on_path):
    reward = build_reward(fixture_component("count_token_reward", kwargs={"scale": 0.5}))
    assert reward(["p", "p"], ["one two three", ""]) == [1.5, 0.0]
    assert pickle.loads(pickle.dumps(reward))(["p"], ["a b"]) == [1.0]


def test_callable_errors_say_what_failed(fixtures_on_path):
    with pytest.raises(ValueError, match="must look like 'package.module:function'"):
        load_callable("reward_fixtures.count_token_reward")
    with pytest.raises(ImportError, match="cannot import module 'no_such_module_xyz'.*No module named"):
        load_callable("no_such_module_xyz:fn")
    with pytest.raises(AttributeError, match="has no attribute 'missing'.*count_token_reward"):
        load_callable("reward_fixtures:missing")
    with pytest.raises(TypeError, match="names a int, which is not callable"):
        CallableReward("reward_fixtures:NOT_CALLABLE")


# ---------------------------------------------------------------- composer


def test_composer_weighted_sum_and_stats(fixtures_on_path):
    composer = RewardComposer(
        [
            fixture_component("count_token_reward", name="length", weight=2.0),
            fixture_component("constant_reward", name="bonus", weight=-0.5, kwargs={"value": 3.0}),
        ]
    )
    total, parts = composer(["p", "p", "p"], ["a", "a b", "a b c d e"])
    # total = 2 * words - 0.5 * 3
    np.testing.assert_allclose(total.numpy(), [0.5, 2.5, 8.5])
    np.testing.assert_allclose(parts["length"].numpy(), [1, 2, 5])
    stats = composer.stats(parts)
    assert stats == {
        "reward/length/mean": pytest.approx(8 / 3),
        "reward/length/std": pytest.approx(np.std([1, 2, 5])),
        "reward/bonus/mean": 3.0,
        "reward/bonus/std": 0.0,
    }
    assert composer.reward_weights == [2.0, -0.5]


def test_composer_normalises_with_running_moments_and_clips(fixtures_on_path):
    composer = RewardComposer([fixture_component("count_token_reward", normalize=True, clip=1.0)])
    first, second = ["a", "a b c"], ["a b c d e f g", "a b", "a b c d"]
    composer([""] * 2, first)
    total, raw = composer([""] * 3, second)
    seen = np.array([1, 3, 7, 2, 4])  # word counts of both batches: the moments cover everything so far
    state = composer.state_dict()["count_token_reward"]
    assert state["count"] == 5 and state["mean"] == pytest.approx(seen.mean())
    assert math.sqrt(state["m2"] / state["count"]) == pytest.approx(seen.std())
    expected = np.clip((np.array([7, 2, 4]) - seen.mean()) / seen.std(), -1, 1)  # 7 words -> +1.66 -> clipped
    np.testing.assert_allclose(total.numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(raw["count_token_reward"].numpy(), [7, 2, 4])  # per-component values stay raw

    resumed = RewardComposer([fixture_component("count_token_reward", normalize=True, clip=1.0)])
    resumed.load_state_dict(pickle.loads(pickle.dumps(composer.state_dict())))
    np.testing.assert_allclose(resumed([""], ["a b"])[0].numpy(), composer([""], ["a b"])[0].numpy())
    with pytest.raises(ValueError, match="resume with the rewards config"):
        resumed.load_state_dict({})


def test_composer_chunks_each_component_and_slices_kwargs(fixtures_on_path):
    composer = RewardComposer([fixture_component("chunk_size_reward", batch_size=2)])
    ids = [[1], [1, 2], [1, 2, 3], [1, 2, 3, 4], [1, 2, 3, 4, 5]]
    _, parts = composer([""] * 5, ["x"] * 5, completion_ids=ids, trainer_state=object())
    # chunks of 2, 2 and 1; completion_ids cut in step with the completions, other kwargs passed whole
    np.testing.assert_allclose(parts["chunk_size_reward"].numpy(), [2001, 2002, 2003, 2004, 1005])


@pytest.mark.parametrize(
    ("function", "index", "message"),
    [
        ("raising_reward", 3, "raised ValueError: cannot score 'boom' at sample 3"),
        ("nan_reward", 2, "returned the non-finite score nan at sample 2"),
        ("none_reward", 0, "returned the non-finite score nan at sample 0"),
        ("short_reward", 0, "returned 1 scores of shape \\(1,\\) for 2 completions at sample 0"),
    ],
)
def test_composer_faults_name_component_and_sample(fixtures_on_path, function, index, message):
    composer = RewardComposer([fixture_component("constant_reward"), fixture_component(function, batch_size=2)])
    completions = ["fine", "fine", "a nan " + "x" * 200, "boom"]
    with pytest.raises(RewardError, match=f"reward '{function}' {message}") as info:
        composer([""] * 4, completions)
    assert (info.value.component, info.value.index) == (function, index)
    preview = repr(completions[index][:80])
    assert preview in str(info.value) and "x" * 81 not in str(info.value)  # completion shown, cut to 80 chars


def test_composer_config_errors(fixtures_on_path):
    with pytest.raises(ValueError, match="named 'same'"):
        RewardComposer([fixture_component("constant_reward", name="same")] * 2)
    with pytest.raises(ValueError, match="weight \\(nan\\) must be a finite"):
        RewardComposer([fixture_component("constant_reward", weight=float("nan"))])
    with pytest.raises(ValueError, match="clip \\(0.0\\) must be > 0"):
        RewardComposer([fixture_component("constant_reward", clip=0.0)])
    with pytest.raises(ValueError, match="needs low < high"):
        RewardComposer([fixture_component("constant_reward", clip=[2.0, 1.0])])
    with pytest.raises(ValueError, match="at least one number"):
        RewardComposer([fixture_component("constant_reward", clip=[None, None])])


def test_composer_one_sided_clip_caps_only_the_top(fixtures_on_path):
    # word counts 7, 2, 4: a ceiling of 3 leaves the low scores alone and caps the high ones
    composer = RewardComposer([fixture_component("count_token_reward", clip=[None, 3.0])])
    texts = ["a b c d e f g", "a b", "a b c d"]
    assert composer([""] * 3, texts)[0].tolist() == [3.0, 2.0, 3.0]
    floor = RewardComposer([fixture_component("count_token_reward", clip=[3.0, None])])
    assert floor([""] * 3, texts)[0].tolist() == [7.0, 3.0, 4.0]


def test_composer_reward_funcs_follow_trls_calling_convention(fixtures_on_path):
    from trl.trainer.utils import get_callable_name

    composer = RewardComposer(
        [
            fixture_component("count_token_reward", name="length", weight=2.0, clip=2.0),
            Component(type="phrase", name="no_darn", weight=1.0, options={"phrases": ["darn"]}),
        ]
    )
    composer = pickle.loads(pickle.dumps(composer))  # TRL may ship reward functions to other processes
    assert [get_callable_name(f) for f in composer.reward_funcs] == ["length", "no_darn"]
    # exactly the keywords GRPOTrainer._calculate_rewards passes, with plain-string completions
    kwargs = dict(completion_ids=[[1, 2], [3]], trainer_state=None, log_extra=print, log_metric=print)
    outs = [f(prompts=["say", "say"], completions=[" darn it all", " ok"], **kwargs) for f in composer.reward_funcs]
    assert outs == [[2.0, 1.0], [-1.0, 0.0]]  # 3 words clipped to 2
    assert composer.reward_weights == [2.0, 1.0]
