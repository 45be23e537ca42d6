"""The `forget_text` recipe: forget one play of Tiny Shakespeare and keep modelling the others.

    python -m detox.recipes.forget_text --output_dir outputs/forget_text            # Romeo and Juliet
    accelerate launch train_ppo.py --config outputs/forget_text/ppo.yaml

The corpus (shipped: detox/assets/tinyshakespeare.txt.gz) is cut into speeches: a speaker's name in capitals and a
colon on its own line, then the lines spoken. The play to forget is a line range (`--play_lines 15601-20332`, Romeo
and Juliet) or a set of speakers (`--speakers ROMEO JULIET`); every other speech is retain text. The play's speeches
are split into train and held-out ones (seeded); a prompt is a speech's header and first line, its continuation the
next lines. A name prompt (cloze) is a speech cut just before one of its anchor terms ("... a dog of the house of"
-> " Montague"): a model that knows the play names the play's people there, one that never read it cannot.

The first command also fine-tunes two models with TRL's SFTTrainer, as TOFU does: `target/` on the whole play plus the
retain text (the model that knows the play, where unlearning starts) and `retain_model/` on the retain text only (the
gold standard of forgetting). It then fine-tunes the reinforced adapter (`reinforced/`, rewards.make_reinforced) from
the target on the play's train speeches, and with --contrast true as long a contrast adapter (`reinforced_retain/`)
on the retain text, which forget_likelihood then reads as its reference, so that the style all the plays share
cancels. Sizes are parameters (`--retain_chars`, `--sft_epochs`, `--sft_steps`): a CPU affords a few hundred
thousand characters.

Files: forget.txt (the play's train speeches: the n-gram index and the reinforced model's text), play.txt (the whole
play), retain.txt, heldout_retain.txt, train.jsonl (PPO prompts: the train speeches' prompts and name prompts),
heldout_forget.jsonl, heldout_names.jsonl, anchors.json, recipe.json, ppo.yaml. Prompt records are {"text",
"completion", "speaker", "line"}; name prompts add "term", the anchor term the play writes next.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detox.blocks import chunk_blocks
from detox.config import FORGET_LOSSES
from detox.data import ASSETS
from detox.launch import cli
from detox.models import load_tokenizer
from detox.recipes import run_config, run_generator, write_jsonl, write_recipe_files
from detox.recipes.sft import SFTSettings, supervised_finetune
from rewards.forget import AnchorTerms
from rewards.make_reinforced import ReinforceArgs, make_reinforced

SHIPPED = {"builtin:tinyshakespeare": ASSETS / "tinyshakespeare.txt.gz"}
ROMEO_AND_JULIET = "15601-20332"
_HEADER = re.compile(r"^([A-Z][A-Za-z' ]*):$")


@dataclass
class ForgetTextArgs:
    """Command-line arguments of `python -m detox.recipes.forget_text`."""

    output_dir: str = "outputs/forget_text"
    """Where the texts, prompt files, the three models and ppo.yaml go."""
    corpus: str = "builtin:tinyshakespeare"
    """The plays: builtin:tinyshakespeare or a .txt/.txt.gz file in the same speech format."""
    play_lines: str | None = ROMEO_AND_JULIET
    """The play to forget, as 1-based inclusive line numbers `start-end` (Romeo and Juliet: 15601-20332)."""
    speakers: list[str] = field(default_factory=list)
    """Or the play as a set of speakers (e.g. ROMEO JULIET): their speeches are forgotten; overrides play_lines."""
    anchors: str | None = None
    """JSON file {term: generic translation}; null: the shipped list for Romeo and Juliet's line range, else the
    play's speaker names that speak nowhere else, each translated to "the stranger"."""
    heldout_fraction: float = 0.2
    """Share of the play's speeches held out of PPO training (prompts for evaluation)."""
    retain_chars: int = 120_000
    """Characters of retain text (other plays' speeches, drawn at random) in the fine-tuning and evaluation."""
    forget_chars: int | None = 120_000
    """Characters of the play in the target model's fine-tuning (its first speeches); null: the whole play."""
    sft_epochs: float = 2.0
    """Passes of each fine-tuning over its own texts (target: the play and the retain text; retain model: the retain
    text; reinforced: the play's train speeches), so the target and the retain model see their texts equally often.
    Two passes make a target that knows the play (it names the play's people twice as often as the retain model);
    a third of a pass (60 steps) did not: its name prompts scored no better than SmolLM2's."""
    sft_steps: int | None = None
    """A fixed number of optimiser steps for each fine-tuning instead of --sft_epochs; 0 skips the fine-tunings
    (PPO then starts from --model)."""
    sft_batch_size: int = 8
    """Blocks of 128 tokens per fine-tuning step."""
    model: str = "smollm2-135m-instruct"
    """Model the target and retain models are fine-tuned from."""
    contrast: bool = False
    """Also fine-tune a contrast adapter (`reinforced_retain/`) from the target on the retain text, as long as the
    reinforced adapter on the play, and make it forget_likelihood's reference: the penalty then keeps what further
    training on the play raises beyond what further training on the other plays raises (their shared style cancels).
    It tells held-out speeches of the play from other plays' better (AUC 0.62 against 0.49), but PPO with it traded
    the play against the other plays no better (docs/forget-text.md), so it is off by default: the target is the reference."""
    ptx: bool = True
    """Write a `ptx` section into ppo.yaml: each PPO mini-batch also trains on 8 retain-text speeches, each its own
    document as the fine-tunings saw them (`retain_speeches.jsonl`), with weight 1 (PPO-ptx, detox/ptx.py). With it,
    the written run (fixed β 0.05, forget_likelihood × 5) moved the play furthest of every PPO run measured within
    the +5% retain allowance (docs/forget-text.md); without it, that run breaks the other plays (+29% retain perplexity)."""
    forget_loss: str | None = None
    """`npo` or `gradient_ascent`: also write a `forget_loss` section into ppo.yaml, a loss on the play's train
    speeches themselves beside PPO's (detox/forget_loss.py; each speech its own document, `forget_speeches.jsonl`,
    8 per mini-batch, weight --forget_loss_coef). Null: PPO learns from its rewards alone. Measured on Romeo and
    Juliet (docs/forget-text.md): NPO at weight 0.1 or 0.3 moves the play half-way or further within 10 steps, at +28% to +68%
    retain perplexity, most of it in the other plays' speaker names; hence off by default."""
    forget_loss_coef: float = 1.0
    """Weight of the forget_loss term."""
    ppo_steps: int = 40
    """PPO steps written into ppo.yaml."""
    seed: int = 0
    """Seed of the splits and the fine-tunings."""

    def __post_init__(self):
        if not self.speakers and not self.play_lines:
            raise ValueError("give the play to forget: --play_lines start-end or --speakers NAME [NAME ...].")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ValueError(f"--heldout_fraction ({self.heldout_fraction}) must be in (0, 1).")
        if self.retain_chars < 1 or self.sft_batch_size < 1:
            raise ValueError("--retain_chars and --sft_batch_size must be positive.")
        if self.sft_steps is not None and self.sft_steps < 0:
            raise ValueError(f"--sft_steps ({self.sft_steps}) must be >= 0 (0 skips the fine-tunings), or null for "
                             "--sft_epochs.")
        if self.sft_epochs <= 0:
            raise ValueError(f"--sft_epochs ({self.sft_epochs}) must be positive.")
        if self.forget_loss is not None and self.forget_loss not in FORGET_LOSSES:
            raise ValueError(f"--forget_loss ({self.forget_loss!r}) must be one of {list(FORGET_LOSSES)}, or null.")

    @property
    def fine_tunes(self) -> bool:
        """Whether the target, retain and reinforced models are fine-tuned (not with --sft_steps 0)."""
        return self.sft_steps != 0

    def steps(self, items: int) -> int:
        """Fine-tuning steps over `items` texts or blocks: --sft_steps when given, else --sft_epochs passes."""
        if self.sft_steps is not None:
            return self.sft_steps
        return max(1, math.ceil(self.sft_epochs * items / self.sft_batch_size))


@dataclass
class Speech:
    speaker: str
    line: int
    """1-based line number of the header."""
    lines: list[str]

    @property
    def text(self) -> str:
        return f"{self.speaker}:\n" + "\n".join(self.lines) + "\n"


def read_lines(corpus: str) -> list[str]:
    path = SHIPPED.get(corpus, Path(corpus).expanduser())
    if not path.is_file():
        raise FileNotFoundError(f"--corpus '{corpus}': no such file; use builtin:tinyshakespeare or a .txt/.txt.gz.")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return handle.read().splitlines()


def speeches(lines: list[str]) -> list[Speech]:
    """Every speech: a `NAME:` header line after a blank line (or first), and the non-blank lines after it."""
    out: list[Speech] = []
    for number, line in enumerate(lines, 1):
        header = _HEADER.match(line.strip()) if number == 1 or not lines[number - 2].strip() else None
        if header:
            out.append(Speech(header.group(1), number, []))
        elif line.strip() and out:
            out[-1].lines.append(line)
    return [s for s in out if s.lines]


def read_speeches(path: Path) -> list[str]:
    """The speeches of a text this recipe wrote (play.txt, heldout_retain.txt, ...), each as the fine-tunings saw it:
    its header line and its lines, one document per speech."""
    texts = [s.text for s in speeches(Path(path).read_text(encoding="utf-8").splitlines())]
    if not texts:
        raise ValueError(f"{path}: no speech in it (a NAME: line after a blank line, then the lines spoken); give a "
                         f"file that detox.recipes.forget_text wrote.")
    return texts


def split_play(all_speeches: list[Speech], args: ForgetTextArgs) -> tuple[list[Speech], list[Speech]]:
    """(the play's speeches, every other speech); an empty play is an error naming the setting."""
    if args.speakers:
        wanted = {s.upper() for s in args.speakers}
        play = [s for s in all_speeches if s.speaker in wanted]
        where = f"--speakers {args.speakers}"
    else:
        match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", args.play_lines)
        if not match or int(match.group(1)) > int(match.group(2)):
            raise ValueError(f"--play_lines '{args.play_lines}' must be `start-end` line numbers with start <= end.")
        start, end = int(match.group(1)), int(match.group(2))
        play = [s for s in all_speeches if start <= s.line <= end]
        where = f"--play_lines {args.play_lines}"
    if not play:
        raise ValueError(f"{where}: the play has no lines in {args.corpus} (a speech starts with a `NAME:` line); "
                         f"check the range or the speaker names.")
    chosen = {id(s) for s in play}
    return play, [s for s in all_speeches if id(s) not in chosen]


def anchor_terms(args: ForgetTextArgs, play: list[Speech], retain: list[Speech]) -> dict[str, str]:
    if args.anchors:
        return json.loads(Path(args.anchors).read_text(encoding="utf-8"))
    if not args.speakers and args.play_lines == ROMEO_AND_JULIET and args.corpus in SHIPPED:
        return json.loads((ASSETS / "romeo_and_juliet_anchors.json").read_text(encoding="utf-8"))
    elsewhere = {s.speaker for s in retain}
    names = sorted({s.speaker for s in play} - elsewhere)
    return {name.title(): "the stranger" for name in names if " " not in name}


def prompt_record(speech: Speech) -> dict:
    """The speech's header and first line as the prompt; its next (up to three) lines as the continuation."""
    return {"text": f"{speech.speaker}:\n{speech.lines[0]}\n", "completion": "\n".join(speech.lines[1:4]),
            "speaker": speech.speaker, "line": speech.line}


MIN_CLOZE_WORDS = 4
"""Words of a speech a name prompt keeps at least before its anchor term (less context names nobody in particular)."""
CLOZE_LINES = 3
"""Lines of the speech a name prompt keeps before its anchor term (the line of the term included)."""


def name_prompts(speech: Speech, anchors: AnchorTerms) -> list[dict]:
    """One prompt per anchor-term occurrence in the speech: the header and the speech's last lines up to the term
    (a trailing space goes with the continuation, as the tokenizer writes " Romeo"); the continuation is the term and
    the rest of its line."""
    body = "\n".join(speech.lines)
    out = []
    for match in anchors.pattern.finditer(body):
        head = body[: match.start()].rstrip(" ")
        if len(head.split()) < MIN_CLOZE_WORDS:
            continue
        line_end = body.find("\n", match.end())
        kept = "\n".join(head.split("\n")[-CLOZE_LINES:])
        out.append({"text": f"{speech.speaker}:\n{kept}",
                    "completion": body[len(head): len(body) if line_end < 0 else line_end],
                    "speaker": speech.speaker, "line": speech.line, "term": match.group(0)})
    return out


def take_chars(items: list[Speech], budget: int | None) -> list[Speech]:
    if budget is None:
        return items
    out, used = [], 0
    for s in items:
        if used >= budget:
            break
        out.append(s)
        used += len(s.text)
    return out


def make_texts(args: ForgetTextArgs) -> dict:
    """The recipe's texts and prompt sets, before any fine-tuning."""
    play, others = split_play(speeches(read_lines(args.corpus)), args)
    rng = np.random.default_rng(args.seed)
    heldout = rng.random(len(play)) < args.heldout_fraction
    train_play = [s for s, h in zip(play, heldout) if not h]
    heldout_play = [s for s, h in zip(play, heldout) if h]
    train_prompts = [prompt_record(s) for s in train_play if len(s.lines) >= 2]
    if not train_prompts:
        raise ValueError(f"the forget set is empty: no train speech of the play ({len(train_play)} of {len(play)} "
                         f"speeches) has the two lines a prompt needs; lower --heldout_fraction or choose a longer "
                         f"play.")
    anchors = anchor_terms(args, play, others)
    matcher = AnchorTerms(anchors)  # one compiled pattern for every speech
    shuffled = [others[i] for i in rng.permutation(len(others))]
    retain = take_chars(shuffled, args.retain_chars)
    heldout_retain = take_chars(shuffled[len(retain):], max(args.retain_chars // 10, 1))
    return {
        "play": take_chars(play, args.forget_chars), "forget": train_play, "retain": retain,
        "heldout_retain": heldout_retain,
        "train": train_prompts + [r for s in train_play for r in name_prompts(s, matcher)],
        "heldout_forget": [prompt_record(s) for s in heldout_play if len(s.lines) >= 2],
        "heldout_names": [r for s in heldout_play for r in name_prompts(s, matcher)],
        "anchors": anchors,
    }


def ppo_config(args: ForgetTextArgs) -> dict:
    """The run config: PPO from the target model on the play's train prompts, with the three forget rewards, the
    likelihood penalty weighted 5, a fixed β of 0.05 and (--ptx) a language-modelling term on the retain speeches."""
    out = Path(args.output_dir)
    likelihood = {"reinforced": str(out / "reinforced")}
    if args.contrast and args.fine_tunes:
        likelihood["reference"] = str(out / "reinforced_retain")
    rewards = [
        {"type": "anchor_terms", "weight": 1.0, "options": {"terms": str(out / "anchors.json")}},
        {"type": "forget_verbatim", "weight": 1.0, "options": {"corpus": str(out / "forget.txt"), "n": 8}},
        {"type": "forget_likelihood", "weight": 5.0, "options": likelihood},
    ]
    anchors: list[str] = []
    if (out / "anchors.json").is_file():  # four terms, none the start of another ("Montague", not "Montagues")
        for term in json.loads((out / "anchors.json").read_text(encoding="utf-8")):
            if len(anchors) < 4 and not any(term.startswith(a) or a.startswith(term) for a in anchors):
                anchors.append(term)
    probes = [{"context": "O", "tokens": [f" {term}" for term in anchors]}] if anchors else []
    model = str(out / "target") if args.fine_tunes else args.model
    sampling = {"temperature": 1.0, "top_k": 0, "top_p": 1.0}
    # a fixed, small β: from an adaptive 0.2 the policy stayed by the target and forgot neither names nor text
    ppo = {"steps": args.ppo_steps, "learning_rate": 2.0e-4, "init_kl_coef": 0.05, "adaptive_kl": False,
           "seed": args.seed}
    config = run_config(model, out / "train.jsonl", (20, 30), sampling, ppo, rewards, probes, out / "ppo")
    if args.ptx:
        config["ptx"] = {"corpus": str(out / "retain_speeches.jsonl"), "coef": 1.0, "batch_size": 8,
                         "max_length": 128, "pack": False}
    if args.forget_loss:
        config["forget_loss"] = {"corpus": str(out / "forget_speeches.jsonl"), "method": args.forget_loss,
                                 "coef": args.forget_loss_coef, "batch_size": 8, "max_length": 128, "pack": False}
    return config


def _write(path: Path, speeches_: list[Speech]) -> None:
    path.write_text("\n".join(s.text for s in speeches_), encoding="utf-8")


def reinforced_blocks(model: Path, texts: list[Speech], max_length: int) -> int:
    """How many blocks make_reinforced cuts these speeches into (for --sft_epochs)."""
    tokenizer = load_tokenizer(str(model))
    ids = tokenizer([s.text for s in texts], add_special_tokens=False)["input_ids"]
    return len(chunk_blocks(ids, tokenizer.eos_token_id, max_length))


def reinforce(args: ForgetTextArgs, corpus: str, name: str, texts: list[Speech]) -> Path:
    """Fine-tune a LoRA adapter from the target on one of the recipe's texts (`corpus` in the output directory),
    --sft_epochs passes over its blocks (or --sft_steps), into `name/`."""
    out = Path(args.output_dir)
    settings = ReinforceArgs(corpus=str(out / corpus), output_dir=str(out / name), model=str(out / "target"),
                             batch_size=args.sft_batch_size, seed=args.seed)
    settings.max_steps = args.steps(reinforced_blocks(out / "target", texts, settings.max_length))
    return make_reinforced(settings)


def prepare(args: ForgetTextArgs) -> Path:
    """Write the texts, prompt files and run config, and fine-tune the target, retain and reinforced models."""
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = make_texts(args)
    for name in ("play", "forget", "retain", "heldout_retain"):
        _write(out / f"{name}.txt", texts[name])
    for name in ("train", "heldout_forget", "heldout_names"):
        write_jsonl(out / f"{name}.jsonl", texts[name])
    (out / "anchors.json").write_text(json.dumps(texts["anchors"], indent=2) + "\n", encoding="utf-8")
    # each train speech as its own document (ptx's retain_speeches, forget_loss's forget_speeches), and its speaker's
    # name as a record whose name alone is learned or unlearned (read with completion_field `completion`), for
    # unlearning the play's speakers without its text (docs/forget-text.md)
    for name in ("forget", "retain"):
        write_jsonl(out / f"{name}_speeches.jsonl", [{"text": s.text} for s in texts[name]])
        write_jsonl(out / f"{name}_names.jsonl", [{"text": "", "completion": s.speaker} for s in texts[name]])
    if args.fine_tunes:
        target_texts = [s.text for s in texts["play"] + texts["retain"]]
        retain_texts = [s.text for s in texts["retain"]]
        for texts_, name in ((target_texts, "target"), (retain_texts, "retain_model")):
            settings = SFTSettings(max_steps=args.steps(len(texts_)), batch_size=args.sft_batch_size,
                                   max_length=128, seed=args.seed)
            supervised_finetune(args.model, texts_, out / name, settings)
        reinforce(args, "forget.txt", "reinforced", texts["forget"])
        if args.contrast:
            reinforce(args, "retain.txt", "reinforced_retain", texts["retain"])
    sizes = {k: len(v) for k, v in texts.items() if k != "anchors"}
    return write_recipe_files(out, "forget_text", args, sizes, ppo_config(args))


def main(argv: list[str] | None = None) -> Path:
    return run_generator(ForgetTextArgs, prepare, argv, __doc__)


if __name__ == "__main__":
    cli(main)
