"""Weighted sum of reward components, with per-component checks, running normalisation and clipping.

A component's raw scores are checked (one finite number per completion) before anything else sees them, so a broken
reward stops training with the component's name and the first bad sample instead of a NaN loss many steps later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from rewards.registry import build_reward

_PREVIEW_CHARS = 80
_FIX_TYPE = "A reward must return one float per completion: `(prompts, completions, **kwargs) -> list[float]`."
_NORM_EPS = 1e-8  # added to the running variance, as in baselines' RunningMeanStd, so a constant reward maps to 0


class RewardError(RuntimeError):
    """A reward component raised, or returned something other than one finite number per completion."""

    def __init__(self, component: str, index: int, message: str):
        super().__init__(message)
        self.component = component
        self.index = index


@dataclass
class RunningMoments:
    """Running mean and variance of every score seen so far (Welford, merged batch-wise as in Chan et al. 1979)."""

    count: float = 0.0
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations from the mean

    def update(self, x: np.ndarray) -> None:
        """Fold the scores `x` (N,) into the running moments."""
        n = float(x.size)
        if n == 0:
            return
        batch_mean = float(x.mean())
        batch_m2 = float(((x - batch_mean) ** 2).sum())
        delta = batch_mean - self.mean
        total = self.count + n
        self.mean += delta * n / total
        self.m2 += batch_m2 + delta**2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        """Population standard deviation of the scores seen so far (0 before any)."""
        return math.sqrt(self.m2 / self.count) if self.count else 0.0

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """(x - mean) / sqrt(var + eps), elementwise on (N,)."""
        return (x - self.mean) / math.sqrt(self.std**2 + _NORM_EPS)


def clip_bounds(name: str, clip: float | Sequence[float | None] | None) -> tuple[float, float] | None:
    """`clip` as (low, high): c -> (-c, c); [low, high] -> itself, a None side unbounded; None -> None (no clip)."""
    if clip is None:
        return None
    if isinstance(clip, (int, float)):
        if not clip > 0:
            raise ValueError(f"rewards '{name}': clip ({clip}) must be > 0, a [low, high] pair, or null (no clipping).")
        return -float(clip), float(clip)
    if len(clip) != 2 or all(side is None for side in clip):
        raise ValueError(f"rewards '{name}': clip {list(clip)} must be a pair [low, high] with at least one number.")
    low = -math.inf if clip[0] is None else float(clip[0])
    high = math.inf if clip[1] is None else float(clip[1])
    if not low < high:
        raise ValueError(f"rewards '{name}': clip [low, high] = {list(clip)} needs low < high.")
    return low, high


class ComponentReward:
    """One component as TRL's GRPOTrainer sees it: chunked, checked, normalised and clipped, but not weighted.

    `raw(...)` returns the checked scores (N,); `transform(raw)` applies the optional normalisation (updating the
    running moments) and clipping; calling the object does both and returns `list[float]`.
    """

    def __init__(
        self,
        name: str,
        reward: Callable[..., Any],
        normalize: bool,
        clip: float | Sequence[float | None] | None,
        batch_size: int,
    ):
        if batch_size < 1:
            raise ValueError(f"rewards '{name}': batch_size ({batch_size}) must be >= 1.")
        self.__name__ = name
        self.reward = reward
        self.clip = clip_bounds(name, clip)
        self.batch_size = batch_size
        self.moments = RunningMoments() if normalize else None

    def __call__(self, prompts: list[str], completions: list[str], **kwargs) -> list[float]:
        return self.transform(self.raw(prompts, completions, **kwargs)).tolist()

    def raw(self, prompts: list[str], completions: list[str], **kwargs) -> np.ndarray:
        """Score the batch in chunks of `batch_size`; returns float64 (N,), every entry finite."""
        n = len(completions)
        if len(prompts) != n:
            raise ValueError(f"got {len(prompts)} prompts for {n} completions; pass one prompt per completion.")
        chunks = []
        for start in range(0, n, self.batch_size):
            end = min(start + self.batch_size, n)
            try:
                out = self._call_chunk(prompts, completions, kwargs, start, end)
            except Exception as err:
                index = self._first_raising(prompts, completions, kwargs, start, end)
                raise self._error(index, completions, f"raised {type(err).__name__}: {err}", "") from err
            chunks.append(self._check(out, start, end, completions))
        return np.concatenate(chunks) if chunks else np.zeros(0)

    def _call_chunk(self, prompts: list[str], completions: list[str], kwargs: dict, start: int, end: int) -> Any:
        n = len(completions)
        chunk_kwargs = {k: _slice(v, n, start, end) for k, v in kwargs.items()}
        return self.reward(prompts=prompts[start:end], completions=completions[start:end], **chunk_kwargs)

    def _first_raising(self, prompts: list[str], completions: list[str], kwargs: dict, start: int, end: int) -> int:
        """Re-score a failed chunk one sample at a time to find the sample that raises (the chunk start if none
        raises alone, e.g. out of memory). Only runs on the way to stopping training, so its cost does not matter."""
        for index in range(start, end):
            try:
                self._call_chunk(prompts, completions, kwargs, index, index + 1)
            except Exception:
                return index
        return start

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Normalise (after folding `raw` into the running moments) and clip; (N,) -> (N,)."""
        scores = raw
        if self.moments is not None:
            self.moments.update(raw)
            scores = self.moments.normalize(raw)
        if self.clip is not None:
            scores = np.clip(scores, *self.clip)
        return scores

    def _check(self, out: Any, start: int, end: int, completions: list[str]) -> np.ndarray:
        if hasattr(out, "detach"):  # a torch tensor, possibly bf16 or on GPU
            out = out.detach().float().cpu().numpy()
        try:
            scores = np.asarray(out, dtype=np.float64)  # None -> nan, caught below
        except (TypeError, ValueError) as err:
            raise self._error(start, completions, f"returned {type(out).__name__} ({err})", _FIX_TYPE) from err
        if scores.ndim != 1 or scores.shape[0] != end - start:
            problem = f"returned {scores.size} scores of shape {scores.shape} for {end - start} completions"
            raise self._error(start, completions, problem, _FIX_TYPE)
        bad = np.flatnonzero(~np.isfinite(scores))
        if bad.size:
            index = start + int(bad[0])
            problem = f"returned the non-finite score {scores[bad[0]]}"
            raise self._error(index, completions, problem, "Return finite floats (no NaN, inf or None).")
        return scores

    def _error(self, index: int, completions: list[str], problem: str, fix: str) -> RewardError:
        preview = completions[index][:_PREVIEW_CHARS]
        message = f"reward '{self.__name__}' {problem} at sample {index} (completion {preview!r}). {fix}".strip()
        return RewardError(self.__name__, index, message)


def _slice(value: Any, n: int, start: int, end: int) -> Any:
    """Cut per-sample kwargs (sequences of length n, e.g. completion_ids) to the chunk; pass the rest through."""
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__len__") or not hasattr(value, "__getitem__"):
        return value
    return value[start:end] if len(value) == n else value


class RewardComposer:
    """Weighted sum of the components of `rewards:` in the config.

    `components` are `RewardComponentConfig`s (anything with type, weight, name, options, normalize, clip, device,
    batch_size). Calling the composer returns `(total (N,), {name: raw scores (N,)})` as float32 CPU tensors, where
    total = sum_k weight_k * clip_k(normalise_k(raw_k)).
    """

    STATS_PREFIX = "reward"

    def __init__(self, components: list[Any]):
        if not components:
            raise ValueError("rewards is empty; configure at least one component, e.g. `- type: toxicity`.")
        self.components: list[ComponentReward] = []
        for cfg in components:
            name = cfg.name or cfg.type
            if name in self.names:
                raise ValueError(f"two reward components are named '{name}'; give each a distinct `name`.")
            self.components.append(ComponentReward(name, build_reward(cfg), cfg.normalize, cfg.clip, cfg.batch_size))
        weights = [float(cfg.weight) for cfg in components]
        for name, weight in zip(self.names, weights):
            if not math.isfinite(weight):
                raise ValueError(f"rewards '{name}': weight ({weight}) must be a finite number.")
        self.weights = np.asarray(weights, dtype=np.float64)  # (K,), one per column of the score matrix

    @property
    def names(self) -> list[str]:
        return [c.__name__ for c in self.components]

    def fitted_prompts(self) -> dict[str, list[str]]:
        """{component: the prompts it was fitted on}, for the components whose reward says (`fitted_prompts()`), so
        that a run can check it holds none of them out."""
        return {c.__name__: c.reward.fitted_prompts() for c in self.components if hasattr(c.reward, "fitted_prompts")}

    @property
    def reward_funcs(self) -> list[ComponentReward]:
        """One callable per component for `GRPOTrainer(reward_funcs=...)`: checked, normalised, clipped."""
        return list(self.components)

    @property
    def reward_weights(self) -> list[float]:
        """For `GRPOConfig(reward_weights=...)`, in the order of `reward_funcs`."""
        return self.weights.tolist()

    def __call__(self, prompts: list[str], completions: list[str], **kwargs):
        """Score a batch; returns (total (N,), {name: raw (N,)}) as float32 torch tensors on CPU."""
        import torch  # lazy: `import rewards` stays free of torch (tests/test_rewards.py)

        raw = {c.__name__: c.raw(prompts, completions, **kwargs) for c in self.components}
        scores = np.stack([c.transform(raw[c.__name__]) for c in self.components], axis=1)  # (N, K)
        total = scores @ self.weights  # (N,)
        per_component = {name: torch.from_numpy(x).float() for name, x in raw.items()}
        return torch.from_numpy(total).float(), per_component

    def stats(self, per_component: dict[str, Any]) -> dict[str, float]:
        """`reward/<name>/mean` and `reward/<name>/std` (population std) of each component's raw scores."""
        out = {}
        for name, scores in per_component.items():
            x = np.asarray(scores.detach().cpu() if hasattr(scores, "detach") else scores, dtype=np.float64)
            out[f"{self.STATS_PREFIX}/{name}/mean"] = float(x.mean()) if x.size else float("nan")
            out[f"{self.STATS_PREFIX}/{name}/std"] = float(x.std()) if x.size else float("nan")
        return out

    def state_dict(self) -> dict[str, dict[str, float]]:
        """Running-normaliser moments of each normalised component, as plain floats."""
        return {c.__name__: vars(c.moments).copy() for c in self.components if c.moments is not None}

    def load_state_dict(self, state: dict[str, dict[str, float]]) -> None:
        expected = {c.__name__ for c in self.components if c.moments is not None}
        if set(state) != expected:
            raise ValueError(
                f"reward normaliser state has components {sorted(state)}, but this config normalises "
                f"{sorted(expected)}; resume with the rewards config the checkpoint was trained with."
            )
        for c in self.components:
            if c.moments is not None:
                c.moments = RunningMoments(**{k: float(v) for k, v in state[c.__name__].items()})
