"""The ``rnnmeta`` console script: answers ``--help`` at once and imports torch and Lightning only for a subcommand.

``rnnmeta fit|validate|test ...`` is :func:`rnnmeta.cli.main` (LightningCLI);
``rnnmeta compare ...`` is :func:`rnnmeta.compare.main`; ``rnnmeta predict ...`` is :func:`rnnmeta.predict.main`.
"""

from __future__ import annotations

import sys
from typing import Optional

HELP = """usage: rnnmeta [-h] {fit,validate,test,predict,compare} ...

Memory-based meta-learners beside gradient-based meta-learning, on PyTorch Lightning.

subcommands:
  fit        meta-train a learner:        rnnmeta fit --config configs/omniglot/maml_5w1s.yaml
  validate   evaluate on the validation episodes of a config (with --ckpt_path)
  test       evaluate on the fixed test episodes:  rnnmeta test --config <config> --ckpt_path <ckpt>
  predict    classify your own files with a trained learner (one CSV row per query file):
             rnnmeta predict --ckpt_path <ckpt> --support <folder>/<class>/<files> --query <folder> [--output preds.csv]
  compare    several learners on the same tasks and budget, one table:
             rnnmeta compare --config configs/compare/sinusoid.yaml

options:
  -h, --help  show this message; `rnnmeta <subcommand> --help` lists that subcommand's options
  --debug     show the traceback of an error (also RNNMETA_DEBUG=1)
"""


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point of the ``rnnmeta`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(HELP, end="")
        if not args:
            sys.exit(2)
        return
    from rnnmeta.cli import main as cli_main

    cli_main(argv)


if __name__ == "__main__":  # pragma: no cover
    main()
