"""Share a trained model: merged full weights, and upload to the Hugging Face Hub with its card.

    python -m detox.export outputs/offline_default/final --merged outputs/offline_default/merged
    HF_TOKEN=... python -m detox.export outputs/offline_default/merged --push_to_hub user/smollm2-detox

train_ppo.py does the same at the end of a run with `--checkpoint.export merged` and
`--checkpoint.push_to_hub REPO_ID`. The token is read from HF_TOKEN and never written or logged.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import yaml
from huggingface_hub import HfApi

from detox.hub import HubUnreachableError, _hub_reachable
from detox.judges import run_config
from detox.model_card import write_model_card
from detox.models import load_causal_lm, load_tokenizer

TRAINING_ONLY = ("value_head.safetensors",)
"""Files of final/ that only training needs; the merged directory and Hub uploads leave them out."""


class UploadError(RuntimeError):
    """An upload to the Hub failed; the model on disk is untouched and the message says how to retry."""


def export_merged(model_dir: str | Path, out_dir: str | Path, dtype: str = "float32") -> Path:
    """Merge the LoRA adapter in `model_dir` into its base and write full safetensors weights, the tokenizer, the run
    config and a model card to `out_dir` (atomically); returns `out_dir`."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not (model_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"'{model_dir}' holds no LoRA adapter (adapter_config.json); a run without LoRA already saves full "
            f"weights in final/, which load with AutoModelForCausalLM."
        )
    model = load_causal_lm(str(model_dir), dtype, what="export")
    tokenizer = load_tokenizer(str(model_dir), what="export")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.padding_side = "right"  # generation pads prompts on the left; plain users expect the default
        tokenizer.save_pretrained(staging)
        config = run_config(str(model_dir))
        if config is not None:
            (staging / "detox_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            write_model_card(staging, config, merged=True, final_dir=out_dir)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def hub_token(repo_id: str) -> str:
    """The HF_TOKEN for an upload to `repo_id`, after checking the Hub can be reached; fails at once otherwise."""
    if not _hub_reachable():
        raise HubUnreachableError(
            f"checkpoint.push_to_hub '{repo_id}': the Hugging Face Hub is unreachable from this machine "
            f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}, or no network). Nothing was uploaded. Drop "
            f"--checkpoint.push_to_hub to train offline, and upload the saved model later from a connected machine: "
            f"`python -m detox.export <output_dir>/final --push_to_hub {repo_id}`."
        )
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise ValueError(
            f"checkpoint.push_to_hub '{repo_id}' needs a Hub token with write access in the HF_TOKEN environment "
            f"variable."
        )
    return token


def push_to_hub(model_dir: str | Path, repo_id: str) -> str:
    """Upload `model_dir` (weights, tokenizer, card, run config) to the Hub model repo `repo_id`; returns its URL.

    A failure leaves `model_dir` as it was and says how to retry.
    """
    token = hub_token(repo_id)
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="model", exist_ok=True)
        api.upload_folder(folder_path=str(model_dir), repo_id=repo_id, repo_type="model",
                          ignore_patterns=list(TRAINING_ONLY), commit_message="Upload model trained with detox")
    except Exception as err:  # network, permission or quota: the model on disk is untouched either way
        raise UploadError(
            f"upload of '{model_dir}' to '{repo_id}' failed ({type(err).__name__}: {err}); the model is kept in "
            f"'{model_dir}'. Retry with `python -m detox.export {model_dir} --push_to_hub {repo_id}`."
        ) from None
    return str(url)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", help="a trained model directory, e.g. <output_dir>/final")
    parser.add_argument("--merged", metavar="OUT_DIR", help="write the LoRA merged into its base to OUT_DIR")
    parser.add_argument("--push_to_hub", metavar="REPO_ID", help="upload (the merged directory, if written) to the Hub")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args(argv)
    if not (args.merged or args.push_to_hub):
        parser.error("give --merged OUT_DIR, --push_to_hub REPO_ID, or both.")
    if args.push_to_hub:
        hub_token(args.push_to_hub)  # fail before merging when the upload cannot happen
    target = export_merged(args.model_dir, args.merged, args.dtype) if args.merged else Path(args.model_dir)
    print(target)
    if args.push_to_hub:
        print(push_to_hub(target, args.push_to_hub))


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
