"""Next-token probes: how likely watched continuations are after fixed contexts, recorded at every logging step.

For the obscene-numbers case the contexts are "sixty" and "fifty" and the watched tokens the continuations the
policy should stop producing. Pictures, written by `ProbeRecorder.save`:

- probe_<context>.png: heatmap, rows = recorded steps (first at the top), columns = watched tokens + "other" (the
  rest of the vocabulary). Grey level = p ** gamma with BLACK = 0 and WHITE = 1, so a continuation being trained
  away shows as its column going dark; gamma < 1 lifts small probabilities so they stay visible.
- probe_<context>.gif: one frame per recorded step, a bar chart of the same probabilities (bars linear in p).
- probes.json: the recorded matrices (steps, tokens, probabilities), to redraw the figures.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from detox.config import ProbeConfig

TOP_K_DEFAULT = 10
"""Tokens watched for a probe that names none: the model's most likely next tokens at the first record."""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def _label(text: str) -> str:
    """Quoted, escaped token text, so a leading space or a newline is visible on axes and in the GIF."""
    return json.dumps(text, ensure_ascii=False)


def _first_token_after(tokenizer, context_ids: list[int], context: str, text: str) -> int | None:
    """Id of the first token of `text` when it follows `context`.

    Tokenising context + text and reading the id after the context's ids follows each tokenizer's own
    leading-space convention (GPT-2's "Ġnine" and SentencePiece's "▁nine" alike); when the context's last token
    merges with `text`, the first token of `text` on its own is used instead.
    """
    joined = tokenizer(context + text, add_special_tokens=False)["input_ids"]
    if joined[: len(context_ids)] == context_ids and len(joined) > len(context_ids):
        return joined[len(context_ids)]
    alone = tokenizer(text, add_special_tokens=False)["input_ids"]
    return alone[0] if alone else None


def heatmap_array(probs: np.ndarray, gamma: float) -> np.ndarray:
    """(S steps, K tokens) probabilities in [0, 1] -> (S, K) uint8 grey levels round(255 * p ** gamma).

    0 is black (p = 0) and 255 white (p = 1); with gamma < 1 a probability of 0.01 gets grey level 26 instead of 3.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or not np.all(np.isfinite(probs)):
        raise ValueError(f"heatmap_array: expected a finite 2-D (steps, tokens) array, got shape {probs.shape}.")
    if not gamma > 0:
        raise ValueError(f"logging.probe_gamma ({gamma}) must be positive (e.g. 0.5).")
    return np.round(255.0 * np.clip(probs, 0.0, 1.0) ** gamma).astype(np.uint8)


def draw_heatmap(probs: np.ndarray, steps: list[int], labels: list[str], gamma: float, title: str):
    """Matplotlib Figure of `heatmap_array(probs, gamma)`: one cell per (step, token), nearest-neighbour, no blur.

    The grey levels are drawn as an RGB uint8 image, not through a colormap (whose float lookup truncates some
    levels by one), so each cell's pixel value in the PNG equals its heatmap_array value exactly.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: only drawing a picture needs matplotlib
    from matplotlib.cm import ScalarMappable  # lazy: only drawing a picture needs matplotlib
    from matplotlib.colors import Normalize  # lazy: only drawing a picture needs matplotlib
    from matplotlib.figure import Figure  # lazy: only drawing a picture needs matplotlib

    grey = heatmap_array(probs, gamma)
    n_steps, n_tokens = grey.shape
    fig = Figure(figsize=(max(4.0, 0.6 * n_tokens + 2.5), max(3.0, min(8.0, 0.2 * n_steps + 2.0))), dpi=80)
    FigureCanvasAgg(fig)
    fig.set_layout_engine("constrained")
    ax = fig.add_subplot()
    ax.imshow(np.repeat(grey[:, :, None], 3, axis=2), interpolation="nearest", aspect="auto")
    ax.set_xticks(range(n_tokens), labels, rotation=45, ha="right", fontsize=8)
    rows = np.unique(np.linspace(0, n_steps - 1, min(n_steps, 15)).round().astype(int))
    ax.set_yticks(rows, [str(steps[r]) for r in rows], fontsize=8)
    ax.set_ylabel("step")
    ax.set_title(title, fontsize=10)
    ticks = (0.0, 0.01, 0.1, 0.5, 1.0)
    scale = ScalarMappable(Normalize(0, 255), cmap="gray")
    bar = fig.colorbar(scale, ax=ax, ticks=[255 * p**gamma for p in ticks])
    bar.ax.set_yticklabels([f"{p:g}" for p in ticks], fontsize=8)
    bar.set_label(f"probability (grey = p^{gamma:g})", fontsize=8)
    return fig


def draw_change(probs: np.ndarray, steps: list[int], labels: list[str], title: str):
    """Matplotlib Figure: each watched token's probability divided by its first recorded value, one line per token on
    a log axis. Rare tokens (p ~ 0.001) that the heatmap shows as near-black read here as clear falls and rises."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: only drawing a picture needs matplotlib
    from matplotlib.figure import Figure  # lazy: only drawing a picture needs matplotlib
    from matplotlib.ticker import FormatStrFormatter  # lazy: only drawing a picture needs matplotlib

    probs = np.asarray(probs, dtype=np.float64)
    fig = Figure(figsize=(6.0, 3.6), dpi=80)
    FigureCanvasAgg(fig)
    fig.set_layout_engine("constrained")
    ax = fig.add_subplot()
    for column, label in enumerate(labels):
        first = probs[0, column]
        if first > 0:
            ax.plot(steps, probs[:, column] / first, label=f"{label} ({first:.2g} at step {steps[0]})")
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.tick_params(axis="y", which="both", labelsize=7)
    ax.set_xlabel("step")
    ax.set_ylabel(f"p / p at step {steps[0]}")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="best")
    return fig


def _bar_frame(probs: np.ndarray, labels: list[str], title: str):
    """One GIF frame (PIL greyscale image): bars linear in probability, value above each bar."""
    font = ImageFont.load_default(size=12)
    slot, left, top, plot_h = 70, 40, 30, 150
    image = Image.new("L", (left + slot * len(probs) + 10, top + plot_h + 40), color=255)
    draw = ImageDraw.Draw(image)
    draw.text((left, 6), title, fill=0, font=font)
    base = top + plot_h
    draw.line([(left - 4, base), (image.width - 6, base)], fill=0)
    for i, (p, label) in enumerate(zip(probs, labels)):
        x = left + i * slot
        draw.rectangle([x + 10, base - round(plot_h * float(p)), x + slot - 10, base], fill=90)
        draw.text((x + 8, base - round(plot_h * float(p)) - 14), f"{p:.3f}", fill=0, font=font)
        draw.text((x + 4, base + 6), label[:10], fill=0, font=font)
    return image


def probe_images(paths: list[Path]) -> dict[str, Path]:
    """The pictures among `ProbeRecorder.save`'s paths, named for `Tracker.log_images`:
    {"probe_sixty/heatmap": probe_sixty.png, "probe_sixty/change": probe_sixty_change.png,
    "probe_sixty/animation": probe_sixty.gif, ...}."""
    images = {}
    for path in map(Path, paths):
        if path.suffix == ".gif":
            images[f"{path.stem}/animation"] = path
        elif path.suffix == ".png" and path.stem.endswith("_change"):
            images[f"{path.stem.removesuffix('_change')}/change"] = path
        elif path.suffix == ".png":
            images[f"{path.stem}/heatmap"] = path
    return images


class ProbeRecorder:
    """Record next-token probabilities of watched tokens after each probe context, and draw them."""

    def __init__(self, tokenizer, probes: list[ProbeConfig], device: str | torch.device = "cpu"):
        self.tokenizer = tokenizer
        self.device = device
        self.contexts = [p.context for p in probes]
        slugs = [_slug(c) for c in self.contexts]
        if len(set(slugs)) != len(slugs):
            raise ValueError(f"logging.probes: contexts {self.contexts} must be distinct (after making file names).")
        self.context_ids: list[list[int]] = []
        self.token_ids: list[list[int] | None] = []
        for i, probe in enumerate(probes):
            ids = tokenizer(probe.context, add_special_tokens=False)["input_ids"]
            if not ids:
                raise ValueError(f"logging.probes[{i}].context ({probe.context!r}) tokenises to nothing; give text.")
            self.context_ids.append(ids)
            self.token_ids.append(self._watched_ids(i, probe, ids) if probe.tokens else None)
        self.steps: list[int] = []
        self.history: list[list[list[float]]] = [[] for _ in probes]  # [probe][record] -> probs of tokens + other

    def _watched_ids(self, i: int, probe: ProbeConfig, context_ids: list[int]) -> list[int]:
        ids = []
        for text in probe.tokens:
            token_id = _first_token_after(self.tokenizer, context_ids, probe.context, text)
            if token_id is None:
                raise ValueError(
                    f"logging.probes[{i}].tokens: {text!r} tokenises to nothing; watch a non-empty continuation "
                    f"written as it follows the context (e.g. ' nine' with its leading space)."
                )
            if token_id in ids:
                raise ValueError(
                    f"logging.probes[{i}].tokens: {text!r} starts with the same token as an earlier entry "
                    f"({self.tokenizer.decode([token_id])!r}); each watched string must begin with a distinct token."
                )
            ids.append(token_id)
        return ids

    def token_texts(self, probe: int) -> list[str]:
        """Decoded watched tokens of probe number `probe` (empty before the first record of a top-k probe)."""
        return [self.tokenizer.decode([t]) for t in self.token_ids[probe] or []]

    @torch.no_grad()
    def _next_token_probs(self, model) -> torch.Tensor:
        """(P, V) next-token distribution after each context, computed in one left-padded batch.

        The softmax runs in float64 so that "other" = 1 - sum(watched) stays exact when the watched tokens hold
        nearly all the mass (float32 rounding over a 49k vocabulary is ~1e-6)."""
        width = max(len(ids) for ids in self.context_ids)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(self.context_ids), width), pad, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for row, ids in enumerate(self.context_ids):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            mask[row, width - len(ids) :] = 1
        # Explicit positions: with left padding, models with absolute position embeddings would otherwise shift.
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        inputs = {"input_ids": input_ids, "attention_mask": mask, "position_ids": position_ids}
        out = model(**{k: v.to(self.device) for k, v in inputs.items()})
        logits = out.logits if hasattr(out, "logits") else out[0]
        return torch.softmax(logits[:, -1].double(), dim=-1).cpu()

    def record(self, model, step: int) -> dict[str, float]:
        """Store P(watched token | context) and the remaining mass "other" at `step`; return them as metrics
        `probe/<context>/<token>` (names sanitised to [A-Za-z0-9_.-]). Runs without grad; the caller sets eval mode
        and passes the unwrapped model (an HF causal LM, a PeftModel, or anything returning `.logits`)."""
        if not self.contexts:
            return {}
        if self.steps and step <= self.steps[-1]:
            raise ValueError(f"ProbeRecorder.record: step {step} after step {self.steps[-1]}; steps must increase.")
        probs = self._next_token_probs(model)
        metrics = {}
        for i, context in enumerate(self.contexts):
            if self.token_ids[i] is None:
                self.token_ids[i] = torch.topk(probs[i], TOP_K_DEFAULT).indices.tolist()
            watched = probs[i, self.token_ids[i]].tolist()
            row = [*watched, max(0.0, 1.0 - sum(watched))]
            self.history[i].append(row)
            for name, p in zip(self._metric_names(i), row):
                metrics[f"probe/{_slug(context)}/{name}"] = p
        self.steps.append(step)
        return metrics

    def _metric_names(self, probe: int) -> list[str]:
        names, seen = [], {"other"}
        for token_id, text in zip(self.token_ids[probe], self.token_texts(probe)):
            name = _slug(text) or f"id{token_id}"
            name = f"{name}_{token_id}" if name in seen else name
            seen.add(name)
            names.append(name)
        return [*names, "other"]

    def state_dict(self) -> dict[str, Any]:
        """Plain-data record of everything recorded, for checkpoints and probes.json."""
        return {"contexts": self.contexts, "token_ids": self.token_ids, "steps": self.steps, "history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a resumed run's record; the contexts must be the ones this recorder was built with."""
        if state["contexts"] != self.contexts:
            raise ValueError(f"probe state is for contexts {state['contexts']}, this run probes {self.contexts}.")
        self.token_ids, self.steps, self.history = state["token_ids"], state["steps"], state["history"]

    def save(self, out_dir: Path, gamma: float) -> list[Path]:
        """Write probe_<context>.png (heatmap), probe_<context>_change.png (relative change) and .gif per probe, and
        probes.json, into `out_dir`; return their paths."""
        if not self.contexts:
            return []
        if not self.steps:
            raise ValueError("ProbeRecorder.save: nothing recorded yet; call record(model, step) first.")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written, dump = [], []
        for i, context in enumerate(self.contexts):
            texts = self.token_texts(i)
            labels = [*map(_label, texts), "other"]
            probs = np.asarray(self.history[i])
            title = f"next token after {_label(context)}"
            written.append(out_dir / f"probe_{_slug(context)}.png")
            draw_heatmap(probs, self.steps, labels, gamma, title).savefig(written[-1])
            written.append(out_dir / f"probe_{_slug(context)}.gif")
            frames = [_bar_frame(row, labels, f"{title}, step {s}") for s, row in zip(self.steps, probs)]
            frames[0].save(written[-1], save_all=True, append_images=frames[1:], duration=400, loop=0)
            written.append(out_dir / f"probe_{_slug(context)}_change.png")
            change = draw_change(probs[:, :-1], self.steps, labels[:-1], f"{title}: change since step {self.steps[0]}")
            change.savefig(written[-1])
            dump.append({"context": context, "token_ids": self.token_ids[i], "tokens": [*texts, "<other>"],
                         "steps": self.steps, "probs": self.history[i]})  # fmt: skip
        written.append(out_dir / "probes.json")
        written[-1].write_text(json.dumps({"gamma": gamma, "grey": "black = 0, white = 1", "probes": dump}, indent=1))
        return written
