"""User rewards loaded from a dotted path: `type: callable`, `options: {path: "package.module:function"}`."""

from __future__ import annotations

import functools
import importlib
from typing import Any, Callable

from detox.config import ConfigTypeError


class RewardImportError(ImportError):
    """`rewards[].options.path` names a module that cannot be imported."""


class RewardAttributeError(AttributeError):
    """`rewards[].options.path` names an attribute its module does not have."""


def load_callable(path: str, kwargs: dict[str, Any] | None = None) -> Callable[..., Any]:
    """Import `path` ("package.module:attr" or "package.module:Class.method"); bind `kwargs` with functools.partial.

    Errors say which part failed (the path's form, the import, the attribute, callability) and what to do.
    """
    module_name, sep, attr_path = path.partition(":")
    if not sep or not module_name or not attr_path:
        raise ValueError(
            f"rewards[].options.path '{path}' must look like 'package.module:function' (module, colon, attribute)."
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise RewardImportError(
            f"rewards[].options.path '{path}': cannot import module '{module_name}': {err}. "
            f"Check the spelling and that its package is installed or on PYTHONPATH."
        ) from err
    obj: Any = module
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n)))
            raise RewardAttributeError(
                f"rewards[].options.path '{path}': '{getattr(obj, '__name__', obj)}' has no attribute '{part}'. "
                f"Callables there: {public}."
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigTypeError(
            f"rewards[].options.path '{path}' names a {type(obj).__name__}, which is not callable; point it at a "
            f"function `(prompts, completions, **kwargs) -> list[float]`."
        )
    return functools.partial(obj, **kwargs) if kwargs else obj


class CallableReward:
    """A user function behind the reward interface; the composer checks what it returns.

    Holds the path rather than the function when pickled, so functions that pickle cannot reach by name (lambdas
    bound to a module attribute, decorated functions) still survive a trip to a worker process.
    """

    __name__ = "callable"

    def __init__(self, path: str, kwargs: dict[str, Any] | None = None):
        self.path = path
        self.kwargs = dict(kwargs or {})
        self._fn = load_callable(path, self.kwargs)  # fail at build time, not at the first training step

    def __call__(self, prompts: list[str], completions: list[str], **kwargs) -> list[float]:
        return self._fn(prompts=prompts, completions=completions, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_fn"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._fn = load_callable(self.path, self.kwargs)
