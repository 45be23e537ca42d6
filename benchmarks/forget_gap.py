"""Where a forget gap lies: which tokens of the play the target model learned, and which of them each method unlearned.

    python -m benchmarks.forget_gap --recipe_dir outputs/forget_text_2ep \
        --models ppo_preset=outputs/forget_text_2ep/ppo/final gradient_ascent=outputs/.../gradient_ascent/final

The forget_text recipe measures forgetting as the play's perplexity moving from the target's (the model fine-tuned on
the play) towards the retain model's (never saw it), at a small cost in perplexity on other plays. This benchmark
measures both per speech and splits the play's gap by token. The units (`--units`) are:
- `speeches` (default): every speech of the play and of the held-out retain text, each scored as its own document,
  the way the target and retain model were fine-tuned (one speech per example);
- `passages`: 48-word windows cut from the play's text as the evaluation cuts them, which run across speeches, so
  they hold blank lines between speeches that no fine-tuning example held.

Tokens of the play are classed by what they are: `speaker header` (the "NAME:" line opening a speech), `anchor
term` (a word the recipe's `anchor_terms` reward penalises: its people and places), `line break`, `blank line` (the
second line break between two speeches, only in passages) and `other`; and by speech: one the unlearning methods
trained on (forget.txt) or one held out from them.

Printed: per model, the perplexity of the play and of the held-out retain text with 95% bootstrap intervals over
units, the share of the way to the retain model (in perplexity, as the recipe's harness reads it) and the retain
perplexity's change against the target (paired interval), on all its tokens and on its speaker headers and other
tokens apart (a model that forgets the play's speakers may forget other plays' speakers with them); then per token
group, the target's and retain model's mean NLL, the group's part of the gap (its summed retain - target NLL over the
whole gap) and the share of the group's gap each model closed ((model - target) / (retain - target) in mean NLL per
token, 95% bootstrap interval over units).
Writes forget_gap.json and forget_gap.md into `--output_dir`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.harness import percentile_interval
from detox import metrics
from detox.evaluation import forget_passages
from detox.scoring import token_nll
from detox.models import load_causal_lm, load_tokenizer
from detox.recipes.forget_text import read_speeches, speeches
from rewards.forget import AnchorTerms

CLASSES = ("speaker header", "anchor term", "line break", "blank line", "other")
SPEECH_SETS = ("trained on", "held out")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe_dir", required=True, help="a forget_text recipe directory (recipe.json, play.txt)")
    parser.add_argument("--models", nargs="*", default=[], metavar="NAME=PATH",
                        help="models to place on the gap (the target and retain model are always scored)")
    parser.add_argument("--units", choices=("speeches", "passages"), default="speeches",
                        help="score whole speeches (as the models were fine-tuned) or the evaluation's passages")
    parser.add_argument("--passages", type=int, default=0, help="units to draw from the play; 0: all of them")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--bootstrap_samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default=None, help="default: <recipe_dir>/forget_gap")
    args = parser.parse_args(argv)
    recipe = Path(args.recipe_dir)
    if not (recipe / "recipe.json").is_file() or json.loads((recipe / "recipe.json").read_text())["recipe"] \
            != "forget_text":
        parser.error(f"--recipe_dir {recipe}: not a forget_text recipe directory (no recipe.json of recipe "
                     f"forget_text); make one with python -m detox.recipes.forget_text --output_dir DIR.")
    for spec in args.models:
        if "=" not in spec:
            parser.error(f"--models {spec!r}: write NAME=PATH.")
    return args


def text_spans(text: str) -> list[tuple[str, int, int, int]]:
    """(speech text, start, header end, end) of every speech in a text the recipe wrote."""
    spans, cursor = [], 0
    for speech in speeches(text.splitlines()):
        start = text.index(speech.text, cursor)
        cursor = start + len(speech.text)
        spans.append((speech.text, start, start + len(speech.speaker) + 2, cursor))  # the header is "NAME:\n"
    return spans


def speech_spans(play: str, recipe: Path) -> tuple[list[tuple[int, int, int]], list[bool]]:
    """(start, header end, end) of every speech in the play's text, and whether the unlearning trained on it."""
    trained = {s for s, *_ in text_spans((recipe / "forget.txt").read_text(encoding="utf-8"))}
    spans = text_spans(play)
    return [span for _, *span in spans], [s in trained for s, *_ in spans]


def retain_char_labels(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Per character of the held-out retain text: `speaker header` or `other` (token_labels' class array), and a
    speech set of zeros (unused)."""
    cls = np.full(len(text), CLASSES.index("other"), dtype=np.int8)
    for _, start, header_end, _ in text_spans(text):
        cls[start:header_end] = CLASSES.index("speaker header")
    return cls, np.zeros(len(text), dtype=np.int8)


def char_labels(play: str, recipe: Path) -> tuple[np.ndarray, np.ndarray]:
    """Per character of the play: its class (index into CLASSES) and its speech set (index into SPEECH_SETS)."""
    cls = np.full(len(play), CLASSES.index("other"), dtype=np.int8)
    for match in AnchorTerms(str(recipe / "anchors.json")).pattern.finditer(play):
        cls[match.start() : match.end()] = CLASSES.index("anchor term")
    for i, char in enumerate(play):
        if char == "\n":
            cls[i] = CLASSES.index("blank line" if i and play[i - 1] == "\n" else "line break")
    speech_set = np.full(len(play), SPEECH_SETS.index("held out"), dtype=np.int8)
    spans, was_trained = speech_spans(play, recipe)
    for (start, header_end, end), trained in zip(spans, was_trained):
        cls[start:header_end] = CLASSES.index("speaker header")  # a header naming a person is a header
        if trained:  # with the blank line after it, which belongs to no speech
            speech_set[start : end + 1] = SPEECH_SETS.index("trained on")
    return cls, speech_set


def token_labels(tokenizer, play: str, passages: list[str], cls: np.ndarray, speech_set: np.ndarray):
    """Token ids of each passage (a substring of the play, in the play's order) and each token's (class, speech set):
    those of its first non-space character, or of its first character when it is all whitespace."""
    ids, labels, cursor = [], [], 0
    for text in passages:
        offset = play.index(text, cursor)
        cursor = offset + 1
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        rows = []
        for a, b in enc["offset_mapping"]:
            chars = [offset + i for i in range(a, b) if not text[i].isspace()] or [offset + a]
            rows.append((cls[chars[0]], speech_set[chars[0]]))
        ids.append(enc["input_ids"])
        labels.append(np.array(rows, dtype=np.int8).reshape(-1, 2))
    return ids, labels


def class_sums(per_token: list[np.ndarray], labels: list[np.ndarray], groups) -> tuple[np.ndarray, np.ndarray]:
    """(passages, groups) summed NLL and token counts, for groups given as functions of a token-label array."""
    sums, counts = np.zeros((len(labels), len(groups))), np.zeros((len(labels), len(groups)))
    for p, (nll, lab) in enumerate(zip(per_token, labels)):
        scored = np.isfinite(nll)
        for g, member in enumerate(groups):
            keep = scored & member(lab)
            sums[p, g], counts[p, g] = nll[keep].sum(), keep.sum()
    return sums, counts


def gap_shares(sums: dict[str, np.ndarray], counts: np.ndarray, names: list[str], samples: int, seed: int):
    """Per group: each model's share of the target -> retain gap in mean NLL per token, and its 95% interval over
    units (bootstrap: resampled units, each replicate pooling their tokens). Also returns each model's mean NLL per
    token, (1 + samples, groups): row 0 on all units, then one row per replicate."""
    rng = np.random.default_rng(seed)
    weights = np.vstack([np.ones(len(counts)),
                         rng.multinomial(len(counts), np.full(len(counts), 1 / len(counts)), size=samples)])
    tokens = weights @ counts  # (1 + samples, groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = {m: (weights @ sums[m]) / tokens for m in ["target", "retain", *names]}
        out = {m: interval((mean[m] - mean["target"]) / (mean["retain"] - mean["target"])) for m in names}
    return mean, out


def interval(replicates: np.ndarray) -> dict[str, np.ndarray]:
    """Row 0: the estimate on all units; the other rows: bootstrap replicates, read as a 95% percentile interval (a
    group with no token, such as blank lines among whole speeches, has none)."""
    low, high = percentile_interval(replicates[1:])
    return {"share": replicates[0], "low": low, "high": high}


def play_units(args: argparse.Namespace, path: Path) -> list[str]:
    """The texts scored: whole speeches (each a document, as fine-tuned) or the evaluation's passages."""
    if args.units == "passages":
        return [head + tail for head, tail in forget_passages(str(path), args.passages or 10**9, args.seed)]
    texts = read_speeches(path)
    if args.passages and args.passages < len(texts):
        keep = np.random.default_rng(args.seed).choice(len(texts), size=args.passages, replace=False)
        texts = [texts[i] for i in sorted(keep)]
    return texts


def run(args: argparse.Namespace) -> dict:
    recipe = Path(args.recipe_dir)
    play = (recipe / "play.txt").read_text(encoding="utf-8")
    units, retain_units = play_units(args, recipe / "play.txt"), play_units(args, recipe / "heldout_retain.txt")
    retain_text = (recipe / "heldout_retain.txt").read_text(encoding="utf-8")
    models = {"target": str(recipe / "target"), "retain": str(recipe / "retain_model")}
    models |= dict(spec.split("=", 1) for spec in args.models)
    tokenizer = load_tokenizer(models["target"])
    ids, labels = token_labels(tokenizer, play, units, *char_labels(play, recipe))
    retain_ids, retain_labels = token_labels(tokenizer, retain_text, retain_units, *retain_char_labels(retain_text))
    retain_groups = {"all": lambda lab: np.ones(len(lab), bool),
                     "speaker headers": lambda lab: lab[:, 0] == CLASSES.index("speaker header"),
                     "other tokens": lambda lab: lab[:, 0] != CLASSES.index("speaker header")}
    groups = [("all", lambda lab: np.ones(len(lab), bool))]
    groups += [(c, lambda lab, i=i: lab[:, 0] == i) for i, c in enumerate(CLASSES)]
    groups += [(f"{s} speeches", lambda lab, i=i: lab[:, 1] == i) for i, s in enumerate(SPEECH_SETS)]
    sums, counts, retain = {}, None, {}
    for name, path in models.items():
        model = load_causal_lm(path, "float32", device="cpu", what=name).eval()
        per_token = token_nll(model, tokenizer, [""] * len(units), units, args.batch_size, name, target_ids=ids)
        sums[name], counts = class_sums(per_token, labels, [member for _, member in groups])
        per_token = token_nll(model, tokenizer, [""] * len(retain_units), retain_units, args.batch_size,
                              f"{name}: retain text", target_ids=retain_ids)
        retain[name] = class_sums(per_token, retain_labels, list(retain_groups.values()))  # (units, groups) each
        del model
    names = [m for m in models if m not in ("target", "retain")]
    mean, shares = gap_shares(sums, counts, names, args.bootstrap_samples, args.seed)
    total_gap = (sums["retain"] - sums["target"]).sum(0)
    result = {"units": args.units, "count": len(units), "retain_count": len(retain_units), "models": models,
              "rows": [], "groups": []}
    ppl = {m: np.exp(mean[m][:, 0]) for m in mean}
    for m in models:
        row = {"model": m, **metrics.perplexity_with_ci("play_perplexity", sums[m][:, 0], counts[:, 0],
                                                        args.bootstrap_samples, args.seed)}
        with np.errstate(invalid="ignore", divide="ignore"):
            way = interval((ppl[m] - ppl["target"]) / (ppl["retain"] - ppl["target"]))
        row |= {"share_of_way": float(way["share"]), "share_of_way_ci_low": float(way["low"]),
                "share_of_way_ci_high": float(way["high"])}
        nll, count = retain[m][0][:, 0], retain[m][1][:, 0]
        row |= metrics.perplexity_with_ci("retain_perplexity", nll, count, args.bootstrap_samples, args.seed)
        for g, group in enumerate(retain_groups):
            # the retain change, on all tokens and on each group alone (is it the other plays' speaker names?)
            nll, count = retain[m][0][:, g], retain[m][1][:, g]
            base_nll, base_count = retain["target"][0][:, g], retain["target"][1][:, g]
            low, high = metrics.paired_perplexity_change_ci(nll, count, base_nll, base_count,
                                                            args.bootstrap_samples, args.seed)
            change = metrics.perplexity(nll, count) / metrics.perplexity(base_nll, base_count) - 1
            key = "retain_change" + ("" if group == "all" else "_" + group.replace(" ", "_"))
            row |= {key: change, f"{key}_ci_low": low, f"{key}_ci_high": high}
        result["rows"].append({k: float(v) if k != "model" else v for k, v in row.items()})
    for g, (label, _) in enumerate(groups):
        row = {"group": label, "tokens": int(counts[:, g].sum()),
               "target_nll": float(mean["target"][0, g]), "retain_nll": float(mean["retain"][0, g]),
               "part_of_gap": float(total_gap[g] / total_gap[0]),
               "shares": {m: {k: float(v[g]) for k, v in shares[m].items()} for m in names}}
        result["groups"].append(row)
    return result


def markdown(result: dict) -> str:
    unit = "whole speeches, each scored as its own document" if result["units"] == "speeches" else \
        "48-word passages cut across speeches, as the evaluation cuts them"
    lines = [f"Units: {unit} ({result['count']} of the play, {result['retain_count']} of the held-out retain text); "
             f"95% bootstrap intervals over units.", "",
             "| model | perplexity on the play [95% CI] | share of the way to the retain model [95% CI] | "
             "perplexity on held-out retain text [95% CI] | Δ retain vs target [paired 95% CI] | "
             "Δ retain, speaker headers only | Δ retain, other tokens |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['play_perplexity']:.1f} [{r['play_perplexity_ci_low']:.1f}, "
                     f"{r['play_perplexity_ci_high']:.1f}] | {r['share_of_way']:+.2f} [{r['share_of_way_ci_low']:+.2f}, "
                     f"{r['share_of_way_ci_high']:+.2f}] | {r['retain_perplexity']:.1f} "
                     f"[{r['retain_perplexity_ci_low']:.1f}, {r['retain_perplexity_ci_high']:.1f}] | "
                     + " | ".join(f"{r[k]:+.1%} [{r[k + '_ci_low']:+.1%}, {r[k + '_ci_high']:+.1%}]" for k in
                                  ("retain_change", "retain_change_speaker_headers", "retain_change_other_tokens"))
                     + " |")
    names = [m for m in result["models"] if m not in ("target", "retain")]
    head = ["tokens", "target NLL / token", "retain model NLL / token", "part of the gap"]
    lines += ["", "Share of each token group's target -> retain gap (mean NLL per token) that each model closed:", "",
              "| group | " + " | ".join(head + names) + " |", "|---" * (len(head) + len(names) + 1) + "|"]
    for row in result["groups"]:
        if not row["tokens"]:
            continue
        cells = [str(row["tokens"]), f"{row['target_nll']:.3f}", f"{row['retain_nll']:.3f}",
                 f"{row['part_of_gap']:.2f}"]
        cells += [f"{s['share']:+.2f} [{s['low']:+.2f}, {s['high']:+.2f}]"
                  for s in (row["shares"][m] for m in names)]
        lines.append(f"| {row['group']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    result = run(args)
    out = Path(args.output_dir or Path(args.recipe_dir) / "forget_gap")
    out.mkdir(parents=True, exist_ok=True)
    (out / "forget_gap.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    text = markdown(result)
    (out / "forget_gap.md").write_text(text, encoding="utf-8")
    print(text)
    return result


if __name__ == "__main__":
    main()
