"""rnnmeta: memory-based (recurrent) meta-learners beside gradient-based meta-learning, on PyTorch Lightning.

``Episode``, ``CLASSIFICATION`` and ``REGRESSION`` are loaded on first use, so that importing the
package (as the ``rnnmeta`` command does to answer ``--help``) does not import torch.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Episode", "CLASSIFICATION", "REGRESSION", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Episode", "CLASSIFICATION", "REGRESSION"):
        from rnnmeta import episode

        return getattr(episode, name)
    raise AttributeError(f"module 'rnnmeta' has no attribute {name!r}")
