"""``{"class_path": ..., "init_args": ...}`` specs: the one place that imports, builds and records them.

LightningCLI and jsonargparse describe a class and its arguments as a ``class_path`` spec. rnnmeta
meets the same form in three places, all served from here:

* backbones given to a learner as a spec (:func:`rnnmeta.nets.resolve_backbone`);
* optimiser and schedule factories (``optimizer: OptimizerCallable``), which jsonargparse hands
  over as ``functools.partial`` objects and which checkpoints must store as plain data, so that
  they load with ``torch.load(weights_only=True)``;
* modules among a learner's hyperparameters, stored in checkpoints as their spec.
"""

from __future__ import annotations

import functools
import importlib
import operator
from typing import Any, Callable, Optional

__all__ = ["LINKED_FROM_DATA", "callable_spec", "import_class", "instantiate", "is_spec", "link_data_to_model", "partial_from_spec"]

#: Learner arguments that the data module decides (:func:`link_data_to_model`).
LINKED_FROM_DATA = ("kind", "n_way")


def is_spec(value: Any) -> bool:
    """Whether ``value`` is a mapping with a string ``class_path``."""
    return isinstance(value, dict) and isinstance(value.get("class_path"), str)


def import_class(class_path: str, what: str = "class_path", base: Optional[type] = None) -> type:
    """The class named by a dotted ``class_path``.

    Raises:
        ValueError: the path cannot be imported (names ``what`` and the path).
        TypeError: the object is not a class, or not a subclass of ``base``.
    """
    module_name, _, class_name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"{what} {class_path!r} cannot be imported: {err}") from err
    if not isinstance(cls, type) or (base is not None and not issubclass(cls, base)):
        expected = f"a subclass of {base.__module__}.{base.__qualname__}" if base is not None else "a class"
        raise TypeError(f"{what} {class_path!r} is not {expected}")
    return cls


def instantiate(spec: dict[str, Any], what: str = "class_path", base: Optional[type] = None, **extra: Any) -> Any:
    """Build ``class_path(**init_args, **extra)`` from a spec (see :func:`import_class` for the errors)."""
    cls = import_class(spec["class_path"], what, base)
    return cls(**dict(spec.get("init_args") or {}), **extra)


def partial_from_spec(value: Any, what: str) -> Callable[..., Any]:
    """A factory from a callable (kept as it is) or a ``class_path`` spec (``functools.partial(cls, **init_args)``).

    Raises:
        TypeError: ``value`` is neither (names ``what``).
    """
    if is_spec(value):
        return functools.partial(import_class(value["class_path"], what), **dict(value.get("init_args") or {}))
    if callable(value):
        return value
    raise TypeError(f"{what} must be a callable or a {{'class_path': ..., 'init_args': ...}} mapping, got {value!r}")


def callable_spec(factory: Any) -> Optional[dict[str, Any]]:
    """The ``class_path`` spec of a class, or of a ``functools.partial`` of a class; None for anything else.

    jsonargparse gives ``OptimizerCallable`` arguments as partials whose positional arguments end
    with the class (``partial(call_without_instantiate_context, default_class_instantiator, cls,
    **init_args)``); a plain ``functools.partial(cls, **kwargs)`` and a bare class work too.
    """
    if isinstance(factory, type):
        return {"class_path": f"{factory.__module__}.{factory.__qualname__}", "init_args": {}}
    if isinstance(factory, functools.partial):
        classes = [a for a in (factory.func, *factory.args) if isinstance(a, type)]
        if len(classes) == 1:
            cls = classes[0]
            return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(factory.keywords)}
    return None


def link_data_to_model(parser: Any, data_key: str = "data", model_key: str = "model.init_args") -> None:
    """Link the instantiated data module's ``kind`` and ``n_way`` into the learner's arguments.

    jsonargparse's ``link_arguments``, applied on instantiation (LightningCLI documents it for
    exactly this): a config states its task once, in the ``data`` section; a value written for the
    learner is replaced by the data module's. Used by ``rnnmeta fit/test`` and ``rnnmeta compare``.
    """
    for name in LINKED_FROM_DATA:
        parser.link_arguments(data_key, f"{model_key}.{name}", compute_fn=operator.attrgetter(name), apply_on="instantiate")
