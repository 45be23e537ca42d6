"""The obscene_numbers recipe end to end: data and counting fine-tune, PPO through the recipe's config, evaluation.

    python -m benchmarks.obscene_numbers [--pair 69] [--output_dir outputs/bench_obscene] [--num_prompts 200]

Prints the recipe table (the fine-tuned model before PPO against the PPO model, same held-out prompts, greedy
decoding and sampling seed) and the probes' first and last values. Targets: the forbidden pattern in greedy
continuations of held-out forbidden prompts down by >= 90%; greedy counting accuracy on control prompts down by
<= 5 points; " nine" after "sixty" fading while it stays after "fifty".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.harness import module, run, script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", default="69")
    parser.add_argument("--output_dir", default="outputs/bench_obscene")
    parser.add_argument("--num_prompts", type=int, default=200, help="held-out forbidden prompts sampled")
    parser.add_argument("--recipe_prompts", type=int, default=200, help="held-out prompts of each kind, greedy")
    parser.add_argument("--samples_per_prompt", type=int, default=2)
    args, train_args = parser.parse_known_args()
    out = Path(args.output_dir).resolve()
    run(module("detox.recipes.obscene_numbers", "--pair", args.pair, "--output_dir", out))
    run(script("train_ppo.py", "--config", out / "ppo.yaml", "--logging.report_to", "none", *train_args))
    run(script("evaluate_toxicity.py", "--models", f"sft={out / 'sft'}", f"ppo={out / 'ppo' / 'final'}",
               "--run_config", out / "ppo.yaml", "--num_prompts", args.num_prompts,
               "--samples_per_prompt", args.samples_per_prompt, "--min_new_tokens", 8, "--max_new_tokens", 12,
               "--recipe_prompts", args.recipe_prompts, "--output_dir", out / "eval"))
    probes = json.loads((out / "ppo" / "probes.json").read_text())
    print("\n## Probes (first -> last recorded step)")
    for probe in probes["probes"]:
        first, last = probe["probs"][0], probe["probs"][-1]
        cells = ", ".join(f"{t!r}: {a:.4f} -> {b:.4f}" for t, a, b in zip(probe["tokens"], first, last))
        print(f"- {probe['context']!r}: {cells}")


if __name__ == "__main__":
    main()
