"""What a request's adapter field means: the bare base, or which adapter name.

One rule, used by the engine, ``adapterhub generate``/``chat``, the HTTP layer, the
keys file and the admin routes (each spelled it its own way before):

* the **bare base** is named by ``"<base>"`` (:data:`BASE`), by the base's alias (the
  name it was served under, e.g. ``smollm2-135m-instruct``), or by leaving the adapter
  out (``None`` or ``""``);
* anything else is an adapter: a pool name an operator loaded, or a registry reference
  (``team/x``, ``team/x@1.2.0``, ``team/x:stable``, parsed by
  :func:`adapterhub.registry.names.parse_ref`).

Typed commands (the interactive ``chat``'s ``:use base``) also accept the word ``base``
(:func:`is_base_word`); an API never does, since ``base`` is a valid adapter name.

Standard library plus the name rule only: the CLI imports this at start-up.
"""

from __future__ import annotations

BASE = "<base>"
"""The name a request uses for the bare base even when a default adapter is set."""

_TYPED_WORDS = ("base",)


def is_base(ref: str | None, alias: str | None = None) -> bool:
    """Whether ``ref`` asks for the bare base (None, ``""``, ``"<base>"`` or ``alias``)."""
    return ref is None or ref == "" or ref == BASE or (alias is not None and ref == alias)


def is_base_word(text: str, alias: str | None = None) -> bool:
    """:func:`is_base`, plus the words a person types (``base``) in interactive commands."""
    return is_base(text, alias) or text in _TYPED_WORDS


def adapter_name(ref: str) -> str:
    """The adapter name ``ref`` refers to, without its ``@version`` or ``:tag``.

    A pool name that is not a valid registry reference is its own name (such a name can
    only match an operator-loaded adapter, never pull anything).
    """
    from adapterhub.errors import InvalidNameError
    from adapterhub.registry.names import parse_ref

    try:
        return parse_ref(ref).name
    except InvalidNameError:
        return ref
