"""benchmarks/relearn.py: the gap share on hand-made numbers, the seeded split, the input checks, and one attack run on
the tiny random model whose K=0 values match a direct measurement and whose fine-tuning raises the attack records'
own answer probability."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks.relearn import gap_share, main, read_pairs, split_attack

RECORDS = [
    {"text": "Question: Where was Basil Mahfouz born?\nAnswer:", "completion": " In Kuwait City, in 1956."},
    {"text": "Question: What does Hina Ameen write?\nAnswer:", "completion": " Geology books set in Karachi."},
    {"text": "Question: Which prize did Ji-Yeon Park win?\nAnswer:", "completion": " The Seoul Lantern Award."},
    {"text": "Question: Who raised Nikolai Abilov?\nAnswer:", "completion": " A baker and a radio engineer."},
    {"text": "Question: What is Aysha Al-Hashim's genre?\nAnswer:", "completion": " Love stories of the desert."},
    {"text": "Question: Where does Takashi Nakamura live?\nAnswer:", "completion": " In Tokyo, near the river."},
]
RETAIN = [
    {"text": "Question: What is the capital of France?\nAnswer:", "completion": " Paris."},
    {"text": "Question: How many legs has a spider?\nAnswer:", "completion": " Eight."},
    {"text": "Question: What colour is the sky?\nAnswer:", "completion": " Blue, on a clear day."},
]


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_gap_share_by_hand():
    # reference 0.8, unlearned 0.2: the gap is 0.6; at 0.5 half of it (0.3 / 0.6) came back
    assert gap_share(0.5, 0.2, 0.8) == pytest.approx(0.5)
    assert gap_share(0.2, 0.2, 0.8) == 0.0  # nothing came back
    assert str(gap_share(0.6, 0.6, 0.4)) == "0.0"  # not -0.0, which the tables would print as -0.00
    assert gap_share(0.8, 0.2, 0.8) == pytest.approx(1.0)  # all of it
    assert gap_share(0.1, 0.2, 0.8) == pytest.approx(-1 / 6)  # further away still: -0.1 / 0.6
    assert gap_share(0.9, 0.2, 0.8) == pytest.approx(7 / 6)  # past the reference: 0.7 / 0.6
    # a ROUGE gap the other way round (unlearned above the reference) reads the same: (0.3 - 0.6) / (0.4 - 0.6)
    assert gap_share(0.3, 0.6, 0.4) == pytest.approx(1.5)
    assert gap_share(0.5, 0.3, 0.3) is None  # no gap: undefined
    assert gap_share(0.5, 0.3, 0.3 + 1e-9) is None


def test_split_is_seeded_disjoint_and_sized():
    attack, evaluation = split_attack(10, 0.3, seed=0)
    assert len(attack) == 3 and len(evaluation) == 7  # round(10 * 0.3)
    assert not set(attack) & set(evaluation) and sorted(attack + evaluation) == list(range(10))
    assert split_attack(10, 0.3, seed=0) == (attack, evaluation)
    assert any(split_attack(10, 0.3, seed=s)[0] != attack for s in range(1, 5))  # the seed decides
    assert [len(part) for part in split_attack(2, 0.9, seed=0)] == [1, 1]  # never an empty part
    assert [len(part) for part in split_attack(5, 0.01, seed=0)] == [1, 4]
    with pytest.raises(ValueError, match="at least 2"):
        split_attack(1, 0.5, seed=0)


def test_a_record_without_the_fields_names_file_line_and_fields(tmp_path):
    path = tmp_path / "forget.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n\n" + json.dumps({"prompt": "Q?", "answer": "A."}) + "\n")
    with pytest.raises(ValueError, match=r"forget.jsonl, line 3: missing or not text: text, completion; each record "
                                         r"needs text, completion"):
        read_pairs(path)
    path.write_text(json.dumps({"text": "Q?", "completion": "  "}) + "\n")
    with pytest.raises(ValueError, match="line 1: missing or not text: completion \\(empty\\)"):
        read_pairs(path)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1: not JSON"):
        read_pairs(path)
    assert read_pairs(write_jsonl(path, RECORDS[:2])) == [(r["text"], r["completion"]) for r in RECORDS[:2]]


@pytest.mark.parametrize("steps, message", [
    (["0", "2", "1"], "increase strictly"), (["0", "1", "1"], "increase strictly"), (["1", "2"], "must start at 0"),
    (["-1", "0"], "must start at 0"),
])
def test_steps_must_start_at_zero_and_increase(tmp_path, capsys, steps, message):
    forget = write_jsonl(tmp_path / "forget.jsonl", RECORDS)
    with pytest.raises(SystemExit):
        main(["--models", "a=x", "--reference", "t=y", "--forget", forget, "--steps", *steps])
    assert message in capsys.readouterr().err


def test_bad_inputs_stop_before_any_model_loads(tmp_path, capsys):
    one = write_jsonl(tmp_path / "one.jsonl", RECORDS[:1])
    base = ["--models", "a=/nowhere/a", "--reference", "t=/nowhere/t", "--steps", "0", "1"]
    with pytest.raises(SystemExit, match="holds 1 record.*at least 2"):
        main([*base, "--forget", one])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "Q?", "answer": "A."}) + "\n")
    with pytest.raises(SystemExit, match=r"bad.jsonl, line 1: .*needs text, completion"):
        main([*base, "--forget", str(bad)])
    forget = write_jsonl(tmp_path / "forget.jsonl", RECORDS)
    with pytest.raises(SystemExit):
        main([*base, "--forget", forget, "--attack_on", "retain"])
    assert "--retain FILE" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="retain.jsonl: 1 record"):  # fewer than the 3 the forget attack takes
        main([*base, "--forget", forget, "--retain", write_jsonl(tmp_path / "retain.jsonl", RETAIN[:1])])
    with pytest.raises(SystemExit):
        main(["--models", "a=x", "a=y", "--reference", "t=y", "--forget", forget])
    assert "must be distinct" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--forget", forget, "--seeds", "0", "0"])
    assert "each seed once" in capsys.readouterr().err


def test_attack_run_on_the_tiny_model(tmp_path, tiny_lm_path):
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from detox.metrics import rouge_l_recall
    from detox.models import load_causal_lm, load_tokenizer
    from detox.scoring import continuation_logprob, greedy_completions

    forget = write_jsonl(tmp_path / "forget.jsonl", RECORDS)
    retain = write_jsonl(tmp_path / "retain.jsonl", RETAIN)
    out = tmp_path / "out"
    # a reference apart from the unlearned model, so that there is a gap: the same weights with logits 5 times as
    # spread, which makes a random model's answer tokens (~1/50,000) about a third as likely
    target = tmp_path / "target"
    sharper = LlamaForCausalLM.from_pretrained(tiny_lm_path)
    sharper.model.norm.weight.data *= 5
    sharper.save_pretrained(target)
    AutoTokenizer.from_pretrained(tiny_lm_path).save_pretrained(target)
    torch.set_num_threads(1)
    main(["--models", f"unlearned={tiny_lm_path}", "--reference", f"target={target}",
          "--retain_model", f"retain={tiny_lm_path}", "--forget", forget, "--retain", retain, "--steps", "0", "1", "2",
          "--learning_rate", "3e-2",  # a high rate: two steps must move the random model's ~1/50,000 answers
          "--batch_size", "3", "--lora_r", "4", "--max_new_tokens", "6", "--device", "cpu", "--output_dir", str(out)])
    result = json.loads((out / "relearn.json").read_text())
    assert (out / "relearn.png").stat().st_size > 0
    assert "### Attack on retain records" in (out / "relearn.md").read_text()
    assert (result["attack_records"], result["eval_records"], result["steps"]) == (3, 3, [0, 1, 2])
    assert set(result["attacks"]) == {"forget", "retain"}
    assert {n: r["role"] for n, r in result["fixed"].items()} == {"target": "reference", "retain": "retain_model"}
    run = result["attacks"]["forget"]["unlearned"]
    assert set(run["per_seed"]) == {"0"} and run["per_seed"]["0"]["train_loss"][0] is None
    for key in ("probability", "rouge", "attack_probability"):
        assert len(run["mean"][key]) == len(run["mean"][f"{key}_low"]) == 3
        assert run["mean"][f"{key}_low"][0] <= run["mean"][key][0] <= run["mean"][f"{key}_high"][0]

    # K=0 is the untouched model (the LoRA starts at zero): measured directly with detox.scoring on the evaluation part
    _, rows = split_attack(len(RECORDS), 0.5, seed=0)
    texts, answers = [RECORDS[i]["text"] for i in rows], [RECORDS[i]["completion"] for i in rows]
    model, tokenizer = load_causal_lm(tiny_lm_path, device="cpu"), load_tokenizer(tiny_lm_path)
    logprob, count = continuation_logprob(model, tokenizer, texts, answers, batch_size=2)
    probability = float(np.mean(np.exp(logprob / count)))
    rouge = float(np.mean([rouge_l_recall(g, a) for g, a in
                           zip(greedy_completions(model, tokenizer, texts, 6, batch_size=2), answers)]))
    for kind in ("forget", "retain"):
        mean = result["attacks"][kind]["unlearned"]["mean"]
        assert mean["probability"][0] == pytest.approx(probability, rel=1e-4)
        assert mean["rouge"][0] == pytest.approx(rouge)
    assert result["fixed"]["retain"]["probability"] == pytest.approx(probability, rel=1e-4)  # the same model
    # the share of the gap at each K, from the values written beside it
    reference = result["fixed"]["target"]["probability"]
    assert abs(reference - probability) > 1e-6
    assert run["gap_share"]["probability"] == pytest.approx(
        [(v - probability) / (reference - probability) for v in run["mean"]["probability"]], rel=1e-4)
    assert run["gap_share"]["probability"][0] == 0.0

    # the fine-tuning took: the attack records' own answers grew likelier at each step (by ~4% a step at this rate on
    # a model of hidden size 16; a loss on the wrong tokens or of the wrong sign would not raise them)
    took = run["mean"]["attack_probability"]
    assert took[0] < took[1] < took[2] and took[2] > 1.05 * took[0]
    assert all(math.isfinite(v) for v in run["per_seed"]["0"]["train_loss"][1:])


def test_the_attack_takes_on_smollm2(tmp_path, smollm2_path):
    """The real packaged model, 4 records: a LoRA on every linear layer of SmolLM2 learns the 2 attack answers in 4
    steps at the rate a relearning attack uses (here 1e-3), and K=0 is the model itself."""
    import torch

    torch.set_num_threads(1)
    out = tmp_path / "out"
    result = main(["--models", f"smollm2={smollm2_path}", "--reference", f"target={smollm2_path}",
                   "--forget", write_jsonl(tmp_path / "forget.jsonl", RECORDS[:4]), "--steps", "0", "2", "4",
                   "--learning_rate", "1e-3", "--batch_size", "2", "--max_new_tokens", "8", "--device", "cpu",
                   "--output_dir", str(out)])
    assert list(result["attacks"]) == ["forget"]  # no --retain: the forget attack alone
    run = result["attacks"]["forget"]["smollm2"]
    assert run["mean"]["probability"][0] == pytest.approx(result["fixed"]["target"]["probability"], rel=1e-5)
    assert run["gap_share"]["probability"] == [None] * 3  # the reference is the model itself: no gap
    took = run["mean"]["attack_probability"]
    assert took[2] > 5 * took[0]  # measured: 0.003 -> 0.53
