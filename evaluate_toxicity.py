"""Compare the toxicity of several models' completions of the same prompts, under several judges.

    python evaluate_toxicity.py --models base=smollm2-135m-instruct detox=outputs/offline_default/final \
        --judges offline minilm_davidson minilm_davidson_reward --num_prompts 200 --samples_per_prompt 4

The job itself is detox.jobs.evaluate_toxicity, whose docstring lists what it writes.
"""

from detox.jobs.evaluate_toxicity import main
from detox.launch import cli

if __name__ == "__main__":
    cli(main)
