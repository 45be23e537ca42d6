"""A question-answering forget reward: the policy is penalised for writing the true answer of a question it must
forget (TOFU's forget set, or any question/answer file).

`AnswerOverlap` (type "answer_overlap"): -(ROUGE-L recall of the question's true answer in the completion), the
share of the answer's words that the completion reproduces in order (TOFU's ROUGE metric, detox.metrics). An answer
that states another fact, or says it does not know, scores near 0; a paraphrase of the true answer still scores its
shared words. The reward finds each prompt's answer by the question it holds, so it reads prompts whatever template
rendered them (the chat template, or "Question: ...\\nAnswer:").
"""

from __future__ import annotations

import json
from pathlib import Path

from detox.metrics import rouge_l_recall


class AnswerOverlap:
    """-(ROUGE-L recall of the true answer) per completion; `qa` is a JSON-lines file of {"question", "answer"}
    records (a TOFU recipe's forget.jsonl), or the records themselves."""

    def __init__(self, qa: str | list[dict], question_field: str = "question", answer_field: str = "answer"):
        records = _read(qa) if isinstance(qa, str) else list(qa)
        self.answers: dict[str, str] = {}
        for number, record in enumerate(records, 1):
            question, answer = record.get(question_field), record.get(answer_field)
            if not question or not answer:
                where = f"{qa}, line {number}" if isinstance(qa, str) else f"record {number}"
                raise ValueError(f"answer_overlap: {where} has no '{question_field}' or '{answer_field}'; each "
                                 f"record needs both.")
            self.answers[question.strip()] = answer
        if not self.answers:
            raise ValueError(f"answer_overlap: no question/answer record in {qa if isinstance(qa, str) else 'qa'}.")
        self._by_length = sorted(self.answers, key=len, reverse=True)  # the longest question a prompt holds wins
        self._found: dict[str, str] = {}

    def answer_of(self, prompt: str) -> str:
        """The true answer of the question `prompt` holds; a prompt that holds none is an error."""
        if prompt not in self._found:
            question = next((q for q in self._by_length if q in prompt), None)
            if question is None:
                raise ValueError(f"answer_overlap: the prompt {prompt[:80]!r} holds none of the "
                                 f"{len(self.answers)} questions of its qa file; train on that file's questions.")
            self._found[prompt] = self.answers[question]
        return self._found[prompt]

    def __call__(self, prompts: list[str], completions: list[str], **kwargs) -> list[float]:
        return [-rouge_l_recall(completion, self.answer_of(prompt)) for prompt, completion in zip(prompts, completions)]


def _read(path: str) -> list[dict]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"answer_overlap: qa file '{path}' not found.")
    records = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"answer_overlap: {path}, line {number}: not JSON ({error.msg}).") from None
    return records
