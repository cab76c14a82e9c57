"""Werkzeug's URL converter semantics for path variables: which captured texts a legacy
Flask rule would have matched at all.

A Flask rule ``/pets/<int:pet_id>`` does not match ``/pets/abc`` or ``/pets/-1``:
the request falls to the next rule, and at the end to the app's 404. An HttpRule
``/pets/{pet_id}`` on an integer field matches both, and the request then fails
with 400 (``abc``) or reaches the handler (``-1``). With a converter named per
variable, the shim treats a value the old converter refuses as no match at all,
so the old answer comes back (the fallback's, or 404).

Converters, by the names Flask rules use:

* ``"string"``: one non-empty segment (the default, like ``{var}`` itself);
* ``"int"``: ASCII-or-Unicode decimal digits only, no sign (``int`` with
  ``signed=False``, Werkzeug's default);
* ``"signed_int"``: an optional ``-`` then digits (``<int(signed=True):id>``);
* ``"float"``: digits ``.`` digits, no sign (``<float:x>``);
* ``"uuid"``: a hyphenated hex UUID (``<uuid:id>``);
* ``"path"``: anything, slashes included.

:func:`converter_for_field` infers the converter a migrated ``<int:...>`` rule
most likely had from the field type. Pure: no web framework.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

from google.protobuf import descriptor

from rpckit.core._descriptors import INT_RANGES

__all__ = ["CONVERTERS", "ConverterName", "converter_accepts", "converter_for_field"]

_FD = descriptor.FieldDescriptor

ConverterName = Literal["string", "int", "signed_int", "float", "uuid", "path"]

#: Each converter's full-match pattern on the percent-decoded value.
CONVERTERS: Mapping[str, re.Pattern[str]] = {
    "string": re.compile(r"[^/]+"),
    "int": re.compile(r"\d+"),
    "signed_int": re.compile(r"-?\d+"),
    "float": re.compile(r"\d+\.\d+"),
    "uuid": re.compile(
        r"[A-Fa-f0-9]{8}-[A-Fa-f0-9]{4}-[A-Fa-f0-9]{4}-[A-Fa-f0-9]{4}-[A-Fa-f0-9]{12}"
    ),
    "path": re.compile(r"[^/].*?", re.DOTALL),
}


def converter_for_field(field: descriptor.FieldDescriptor) -> ConverterName:
    """The converter of the Flask rule a path variable on ``field`` most likely came from:
    integers ``int``, floating point ``float``, anything else ``string``."""
    if field.cpp_type in INT_RANGES:
        return "int"
    if field.cpp_type in (_FD.CPPTYPE_DOUBLE, _FD.CPPTYPE_FLOAT):
        return "float"
    return "string"


def converter_accepts(
    name: str, text: str, field: descriptor.FieldDescriptor | None = None
) -> bool:
    """Whether the converter ``name`` matches the decoded ``text``.

    For ``int``/``signed_int`` on an integer ``field`` a value beyond the field's
    range counts as no match too: Werkzeug would have matched it and the view's
    lookup would have found nothing, which the legacy app answered 404, not 400.
    """
    pattern = CONVERTERS.get(name)
    if pattern is None:
        raise ValueError(f"unknown converter {name!r}: use one of {sorted(CONVERTERS)}")
    if pattern.fullmatch(text) is None:
        return False
    if name in ("int", "signed_int") and field is not None and field.cpp_type in INT_RANGES:
        low, high = INT_RANGES[field.cpp_type]
        try:
            return low <= int(text) <= high
        except ValueError:
            return False
    return True
