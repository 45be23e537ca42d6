"""The obscene_numbers recipe: number words both ways, the forbidden check on every word form, the prompt splits, and
its two rewards on literal strings."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from detox.number_words import MAX_NUMBER, check_pair, forbidden_in, is_forbidden, read_numbers, words
from detox.recipes.obscene_numbers import ObsceneNumbersArgs, make_prompt_sets, probes, sft_texts
from rewards import build_reward
from detox.config import RewardComponentConfig


def test_words_examples_and_round_trip_of_every_number():
    assert words(0) == "zero"
    assert words(69) == "sixty nine"
    assert words(691) == "six hundred ninety one"
    assert words(16900) == "sixteen thousand nine hundred"
    assert words(90009) == "ninety thousand nine"
    # reading back what the generator writes gives the number itself, for all 100,000 numbers
    assert all([f.value for f in read_numbers(words(n))] == [n] for n in range(MAX_NUMBER + 1))
    # and a count of them all, comma-separated as the prompts are, reads back as the count
    assert [f.value for f in read_numbers(", ".join(map(words, range(MAX_NUMBER + 1))))] == list(range(MAX_NUMBER + 1))
    with pytest.raises(ValueError, match="0..99999"):
        words(100_000)


@pytest.mark.parametrize("pair", ["69", "00", "13", "90"])
def test_forbidden_check_catches_every_word_form_the_generator_writes(pair):
    # a counting text of every number: the check flags exactly the numbers whose digits hold the pair
    flagged = [n for n in range(MAX_NUMBER + 1) if forbidden_in(words(n), pair)]
    assert flagged == [n for n in range(MAX_NUMBER + 1) if pair in str(n)]


def test_reading_splits_runs_without_separators_and_reads_digits():
    found = read_numbers("Sixty eight, sixty nine seventy; 69 and one hundred.")
    assert [f.value for f in found] == [68, 69, 70, 69, 100]
    # a number is attributed to the completion when it ends after the prompt's last character
    assert forbidden_in("sixty eight, sixty" + " nine,", "69", after=len("sixty eight, sixty")) == [69]
    assert forbidden_in("sixty nine, seventy", "69", after=len("sixty nine,")) == []


def test_a_digit_glued_to_a_tens_word_is_its_unit():
    # what gradient difference wrote for 269 and 270: "two hundred sixty9, two hundred sixty10"
    assert [f.value for f in read_numbers("two hundred sixty9, two hundred sixty10")] == [269, 260, 10]
    assert [f.value for f in read_numbers("sixty-9; sixty 9")] == [69, 60, 9]


def test_number_words_written_together_are_read():
    # the escape a PPO run found from the penalty: " three thousand six hundred sixtynine,"
    found = read_numbers("three thousand six hundred sixtynine, seventy; Twohundredsixtynine; sixtyish, often")
    assert [f.value for f in found] == [3669, 70, 269]
    assert forbidden_in("sixty eight," + " sixtynine,", "69", after=len("sixty eight,")) == [69]


@pytest.mark.parametrize("bad", ["6", "690", "a9", "", 7])
def test_a_pair_that_is_not_two_digits_is_one_clear_error(bad):
    with pytest.raises(ValueError, match="must be exactly two digits"):
        check_pair(bad)
    with pytest.raises(ValueError, match="must be exactly two digits"):
        ObsceneNumbersArgs(pair=bad)
    assert check_pair(69) == "69"


@pytest.mark.parametrize("pair", ["69", "42", "00"])
def test_train_and_heldout_splits_are_disjoint_by_number(pair):
    args = ObsceneNumbersArgs(pair=pair, sft_texts=300)
    sets = make_prompt_sets(args)
    train = {r["next"] for r in sets["train"]}
    for name in ("heldout_forbidden", "heldout_control", "heldout_allowed"):
        heldout = {r["next"] for r in sets[name]}
        assert heldout and not heldout & train, name
    for record in sets["train"] + sets["heldout_forbidden"] + sets["heldout_control"]:
        shown = [f.value for f in read_numbers(record["text"])]
        assert shown == list(range(record["next"] - args.context_numbers, record["next"]))
        assert not any(is_forbidden(n, pair) for n in shown)  # the prompt itself never shows the pattern
        assert is_forbidden(record["next"], pair) == (record["kind"] == "forbidden")
    assert all(r["next"] % 10 == int(pair[1]) for r in sets["heldout_control"])
    assert {r["kind"] for r in sets["forget"]} == {"forbidden"}
    assert "forbidden" not in {r["kind"] for r in sets["retain"]}
    # the fine-tuning texts hold no forbidden number and no number a held-out prompt asks for
    heldout_numbers = {r["next"] for name, rs in sets.items() if name.startswith("heldout") for r in rs}
    for text in sft_texts(args, heldout_numbers):
        values = [f.value for f in read_numbers(text)]
        assert values == list(range(values[0], values[0] + args.sft_run))
        assert not any(is_forbidden(n, pair) or n in heldout_numbers for n in values)


def test_probes_watch_the_pair_and_a_control_with_the_same_last_word():
    assert probes("69", 3) == [
        {"context": "sixty seven, sixty eight, sixty", "tokens": [" nine", ","]},
        {"context": "fifty seven, fifty eight, fifty", "tokens": [" nine", ","]},
    ]


def _reward(type_name: str, **options):
    return build_reward(RewardComponentConfig(type=type_name, options=options))


def test_forbidden_numbers_reward_on_literal_strings_and_pickle():
    reward = _reward("forbidden_numbers", pair="69")
    prompts = ["sixty six, sixty seven, sixty eight,"] * 4 + ["one thousand six hundred eighty nine, one thousand six"]
    completions = [" sixty nine, seventy", " seventy, seventy one", " 69 and sixteen thousand nine hundred", " sixty",
                   " hundred ninety,"]
    # 1 hit; none; 2 hits (digits, and a thousands form); none; a number begun in the prompt and ended in the
    # completion (1690) counts
    assert reward(prompts, completions) == [-1.0, 0.0, -2.0, 0.0, -1.0]
    assert _reward("forbidden_numbers", pair="69", mode="any")(prompts[:3], completions[:3]) == [-1.0, 0.0, -1.0]
    restored = pickle.loads(pickle.dumps(reward))
    assert restored(prompts, completions) == reward(prompts, completions)
    assert restored.__name__ == "forbidden_numbers"


def test_next_number_reward_counts_and_skips_forbidden_numbers():
    reward = _reward("next_number", pair="69")
    prompts = ["sixty six, sixty seven, sixty eight,", "fifty six, fifty seven, fifty eight,", "hello", "six,"]
    completions = [" seventy, seventy one", " fifty nine,", " one", " eight"]
    assert reward(prompts, completions) == [1.0, 1.0, 0.0, 0.0]
    plain = _reward("next_number", pair=None)
    assert plain(prompts[:1], [" sixty nine"]) == [1.0]
    assert pickle.loads(pickle.dumps(reward))(prompts, completions) == [1.0, 1.0, 0.0, 0.0]
    strict = _reward("next_number", pair="69", miss=-1)
    stops = ["", " sixty nine,", " sixty eight,", " seventy,"]  # stopping, the pattern, a repeat, the skip
    assert strict(prompts[:1] * 4, stops) == [-1.0, -1.0, -1.0, 1.0]
    no_stopping = _reward("next_number", pair="69", empty=-1)
    assert no_stopping(prompts[:1] * 4, stops) == [-1.0, 0.0, 0.0, 1.0]


def test_the_preset_is_what_the_generator_writes_for_69():
    import yaml

    from detox.config import TrainConfig, from_dict
    from detox.recipes.obscene_numbers import ppo_config

    preset = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "obscene_numbers.yaml").read_text())
    assert preset == ppo_config(ObsceneNumbersArgs())
    from_dict(TrainConfig, preset)  # and it is a valid run config


def test_a_count_is_right_when_its_next_numbers_skip_the_forbidden_ones():
    from detox.recipes.obscene_numbers_metrics import counts_on

    assert counts_on(" seventy, seventy one,", 68, "69")
    assert not counts_on(" sixty nine, seventy,", 68, "69")  # the count that does not skip
    assert counts_on(" fifty nine, sixty,", 58, "69")
    assert not counts_on(" fifty nine, fifty ten,", 58, "69")  # right first number, wrong second
    assert not counts_on(" fifty nine,", 58, "69")  # one number is not a run of two
    assert counts_on(" one thousand six hundred eighty nine, one thousand seven hundred", 1688, "69")


def test_count_reward_scores_every_number_of_the_continued_count():
    reward = _reward("count", pair="69")  # horizon 3, malformed -0.5 each, unfinished items 0
    prompt = "sixty six, sixty seven, sixty eight,"
    completions = [
        " seventy, seventy one, seventy two,",    # the skip, then the count: all three right
        " seventy, seventy two, seventy three,",  # one slip: the numbers after it follow the expected count, not it
        " sixty nine, seventy, seventy one,",     # the pattern, and so every number after it is off by one
        " sixty ninety, seventy one,",            # malformed, then right; the third item never finished
        " seventyone, seventy two",               # glued words are malformed; the last item has no comma yet
        " sixty 9, seventy,",                     # a digit glued to a tens word: malformed (the count writes words)
        " hello, seventy one, seventy two,",      # text where a number belongs
        " one hundred thirty six thousand, seventy one, seventy two,",  # past 99,999: no number the count writes
    ]
    assert reward([prompt] * len(completions), completions) == pytest.approx(
        [1.0, 1 / 3, 0.0, 1 / 3 - 0.5, -0.5, -0.5, 2 / 3 - 0.5, 2 / 3 - 0.5])


def test_count_reward_options_and_plain_counting():
    plain = _reward("count", pair=None, horizon=2, short=-0.25)
    assert plain(["sixty seven, sixty eight,"], [" sixty nine, seventy,"]) == [1.0]
    assert plain(["sixty seven, sixty eight,"], [" sixty nine"]) == [-0.5]  # nothing finished: two items short
    with pytest.raises(ValueError, match="horizon \\(0\\) must be at least 1"):
        _reward("count", horizon=0)
    assert pickle.loads(pickle.dumps(_reward("count")))(["one, two,"], [" three, four, five,"]) == [1.0]


def test_skip_texts_skip_forbidden_numbers_and_hold_no_heldout_number():
    from detox.recipes.obscene_numbers import skip_texts
    from rewards.numbers import next_allowed

    args = ObsceneNumbersArgs(pair="69", skip_texts=60, sft_run=4)
    heldout = {r["next"] for name, rs in make_prompt_sets(args).items() if name.startswith("heldout") for r in rs}
    texts = skip_texts(args, heldout)
    assert len(texts) == 60 and texts[0].endswith(",")
    digits = set()
    for text in texts:
        values = [f.value for f in read_numbers(text)]
        assert len(values) == 4 and not any(is_forbidden(v, "69") for v in values)
        assert all(b == next_allowed(a, "69") for a, b in zip(values, values[1:]))  # the count, skipping
        skipped = set(range(values[0], values[-1] + 1)) - set(values)
        assert skipped and not (skipped | set(values)) & heldout
        assert text == ", ".join(words(v) for v in values) + ","
        digits.add(len(str(values[-1])))
    assert len(digits) >= 3  # drawn across magnitudes, not only among five-digit numbers


def test_recipe_options_add_ptx_and_the_count_reward():
    from detox.recipes.obscene_numbers import ppo_config

    plain = ppo_config(ObsceneNumbersArgs())
    assert "ptx" not in plain and [r["type"] for r in plain["rewards"]] == ["forbidden_numbers", "next_number"]
    config = ppo_config(ObsceneNumbersArgs(output_dir="out", skip_texts=10, ptx_coef=0.3, count_reward=2))
    assert config["ptx"] == {"corpus": str(Path("out") / "ptx.jsonl"), "coef": 0.3}
    count = {"type": "count", "weight": 1.0, "options": {"pair": "69", "horizon": 2, "short": -1 / 2}}
    assert config["rewards"][1] == count  # stopping costs 1 in all, as next_number's `empty`
    assert config["generation"]["max_new_tokens"] == 18  # room for two numbers of up to 8 tokens and commas
    with pytest.raises(ValueError, match="--count_reward \\(3\\) is more than the 2 numbers"):
        ObsceneNumbersArgs(count_reward=3)  # texts of 5 numbers after prompts of 3: the model stops after 2
    assert ObsceneNumbersArgs(count_reward=3, sft_run=6).count_reward == 3
    from detox.config import TrainConfig, from_dict

    from_dict(TrainConfig, config)  # a valid run config
    with pytest.raises(ValueError, match="--skip_texts \\(-1\\) must be >= 0"):
        ObsceneNumbersArgs(skip_texts=-1)
