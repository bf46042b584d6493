"""``rnnmeta fit|test`` for meta-RL agents: which base classes the LightningCLI is built with.

An RL config names an agent (a subclass of :class:`~rnnmeta.rl.agent.MetaRLAgent`) as ``model``
and no ``data``: the agent owns its task family, its trial protocol and its fixed evaluation tasks.
:func:`cli_classes` looks at the command line (``--config`` files, ``--model``) and returns
``(MetaRLAgent, None)`` for such a config, otherwise the supervised defaults it is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional


def _model_class_paths(args: list[str]) -> list[str]:
    """The ``model.class_path`` values named on the command line or in its ``--config`` files (in order)."""
    import yaml

    found: list[str] = []
    for i, arg in enumerate(args):
        value: Optional[str] = None
        if arg.startswith("--config=") or (arg == "--config" and i + 1 < len(args)):
            path = arg.split("=", 1)[1] if "=" in arg else args[i + 1]
            try:
                cfg = yaml.safe_load(Path(path).read_text())
            except (OSError, yaml.YAMLError):
                continue  # LightningCLI reports the unreadable file itself
            model = cfg.get("model") if isinstance(cfg, dict) else None
            value = model.get("class_path") if isinstance(model, dict) else (model if isinstance(model, str) else None)
        elif arg in ("--model", "--model.class_path") and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(("--model=", "--model.class_path=")):
            value = arg.split("=", 1)[1]
        if value:
            found.append(str(value))
    return found


def is_rl_agent(class_path: str) -> bool:
    """Whether ``class_path`` names a :class:`~rnnmeta.rl.agent.MetaRLAgent` (``rnnmeta.rl.RL2``, or a user's subclass)."""
    from rnnmeta.rl.agent import MetaRLAgent
    from rnnmeta.specs import import_class

    module, _, name = class_path.rpartition(".")
    if not module:
        import rnnmeta.rl as rl

        return isinstance(getattr(rl, name, None), type) and issubclass(getattr(rl, name), MetaRLAgent)
    try:
        import_class(class_path, "model class_path", base=MetaRLAgent)
    except (ValueError, TypeError):
        return False
    return True


def cli_classes(args: Optional[list[str]], model_class: Any, datamodule_class: Any) -> tuple[Any, Any]:
    """``(MetaRLAgent, None)`` when the last model named by ``args`` is an RL agent, else the given classes."""
    import sys

    names = _model_class_paths(list(sys.argv[1:] if args is None else args))
    if names and is_rl_agent(names[-1]):
        from rnnmeta.rl.agent import MetaRLAgent

        return MetaRLAgent, None
    return model_class, datamodule_class


__all__ = ["cli_classes", "is_rl_agent"]
