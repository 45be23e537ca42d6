"""TOFU's sets as detox reads them (detox/tofu_data.py): the shipped copy against the real files, and bad input."""

from __future__ import annotations

import json
import shutil

import pytest

from detox.tofu_data import FORGET_AUTHORS, RETAIN_OF, authors, forget_retain, read_set


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("split", sorted(FORGET_AUTHORS))
def test_shipped_splits_are_tofus_own(split, shared_data):
    forget, retain = forget_retain(split)  # cut from the shipped full set
    assert forget == _rows(shared_data / "tofu" / f"{split}.jsonl")
    assert retain == _rows(shared_data / "tofu" / f"{RETAIN_OF[split]}.jsonl")
    assert len(authors(forget)) == FORGET_AUTHORS[split] and len(authors(forget + retain)) == 200
    perturbed = read_set(f"{split}_perturbed")
    assert [r["question"] for r in perturbed] == [r["question"] for r in forget]
    assert all(len(r["perturbed_answer"]) == 5 and r["paraphrased_answer"] for r in perturbed)
    forget_retain(split, root=shared_data / "tofu")  # the real folder passes the check against full


def test_other_sets_and_their_fields():
    assert {len(r["perturbed_answer"]) for r in read_set("real_authors_perturbed")} == {3}
    assert len(read_set("world_facts_perturbed")) == 117 and len(read_set("retain_perturbed")) == 400
    full_questions = {r["question"] for r in read_set("full")}
    assert not full_questions & {r["question"] for r in read_set("holdout10")}  # other authors
    assert read_set("idontknow")[0] == {"answer": "I'm not certain about that."}


def test_a_row_without_a_field_names_the_file_line_and_fields(tmp_path):
    rows = read_set("forget01_perturbed")
    del rows[2]["perturbed_answer"]
    (tmp_path / "forget01_perturbed.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    with pytest.raises(ValueError, match=r"forget01_perturbed.jsonl, line 3: missing perturbed_answer; a row of TOFU's "
                                         r"forget01_perturbed needs question, answer, paraphrased_answer, "
                                         r"perturbed_answer"):
        read_set("forget01_perturbed", root=tmp_path)


def test_a_forget_split_that_is_not_the_tail_of_full_is_refused(tmp_path, shared_data):
    shutil.copy(shared_data / "tofu" / "full.jsonl", tmp_path / "full.jsonl")
    forget = _rows(shared_data / "tofu" / "forget05.jsonl")
    forget[7]["answer"] = "An answer that is not in full."
    (tmp_path / "forget05.jsonl").write_text("\n".join(map(json.dumps, forget)) + "\n")
    with pytest.raises(ValueError, match=r"forget05.jsonl: row 8 is not row 8 of the forget05 part of full.jsonl"):
        forget_retain("forget05", root=tmp_path)
    with pytest.raises(ValueError, match=r"forget split 'forget20' is not one of TOFU's"):
        forget_retain("forget20")
