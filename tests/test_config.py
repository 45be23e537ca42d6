"""The run config: presets parse, and `train_ppo.py` with no arguments runs exactly configs/offline_default.yaml."""

from pathlib import Path

import pytest

from detox.config import parse_config, to_dict

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_no_argument_default_is_the_offline_preset():
    assert to_dict(parse_config([])) == to_dict(parse_config(["--config", str(CONFIGS / "offline_default.yaml")]))


@pytest.mark.parametrize("preset", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_preset_parses(preset):
    import yaml

    from detox.baselines.config import UnlearnConfig

    if "method" in yaml.safe_load((CONFIGS / preset).read_text()):  # a train_unlearn.py preset
        cfg = parse_config(["--config", str(CONFIGS / preset)], UnlearnConfig)
        assert cfg.data.forget and cfg.optim.steps > 0
        return
    cfg = parse_config(["--config", str(CONFIGS / preset)])
    assert cfg.rewards and cfg.ppo.batch_size % cfg.ppo.mini_batch_size == 0


def test_flags_override_yaml_and_lists_take_several_values():
    cfg = parse_config(["--config", str(CONFIGS / "offline_default.yaml"), "--ppo.learning_rate", "1e-5",
                        "--lora.target_modules", "q_proj", "v_proj"])
    assert cfg.ppo.learning_rate == 1e-5  # YAML reads "1e-5" as a string; the float field converts it
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
