"""One-dimensional PostgreSQL arrays in binary, encoded in one pass.

psycopg dumps a Python list by finding its element type and then handing each
element to a dumper, in Python; for the twelve arrays of the commit statement
(``stores.postgres_commit``) that was most of the client CPU a commit cost. The
statement knows each array's type, so it builds ``TextArray``, ``Int8Array``,
``Int2Array`` and ``ByteaArray`` values instead: each holds the array's binary form
as the server's ``array_recv`` reads it (dimensions, a NULL flag, the element type,
then each element's length and bytes), built with ``struct``. The commit sends that
form (``data``) as a binary parameter itself; a psycopg dumper passes it on unchanged
with the array type's oid when a value is given to psycopg.

The dumpers are registered in psycopg's global adapters when this module is
imported, so every connection made afterwards knows them, however it was made
(a ``connect`` given to the backend included). They adapt only these classes.

Since 0.2.0.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import ClassVar

import psycopg
from psycopg.adapt import Buffer, Dumper

__all__ = ["ByteaArray", "Int2Array", "Int8Array", "TextArray"]

_HEAD = struct.Struct(">iiiii")
"""ndim (1), has-NULL flag, element oid, the dimension's length, its lower bound (1)."""
_EMPTY = struct.Struct(">iii")
"""ndim (0), no NULL, element oid: an empty array has no dimension."""
_LENGTH = struct.Struct(">i")
_NULL = _LENGTH.pack(-1)


class BinaryArray:
    """An array's binary form; the subclass names its type."""

    __slots__ = ("data",)
    OID: ClassVar[int]
    ELEMENT_OID: ClassVar[int]

    def __init__(self, elements: Sequence[bytes | None]) -> None:
        """``elements``: each element's binary form, or ``None`` for NULL."""
        if not elements:
            self.data = _EMPTY.pack(0, 0, self.ELEMENT_OID)
            return
        pack = _LENGTH.pack
        parts = [_NULL if e is None else pack(len(e)) + e for e in elements]
        # Exact: a real element's length prefix is never -1.
        head = _HEAD.pack(1, int(_NULL in parts), self.ELEMENT_OID, len(elements), 1)
        self.data = head + b"".join(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.data)} bytes)"  # no values: they may be keys


class TextArray(BinaryArray):
    __slots__ = ()
    OID = 1009
    ELEMENT_OID = 25

    @classmethod
    def of(cls, items: Sequence[str]) -> TextArray:
        return cls([item.encode() for item in items])


class ByteaArray(BinaryArray):
    __slots__ = ()
    OID = 1001
    ELEMENT_OID = 17

    @classmethod
    def of(cls, items: Sequence[bytes]) -> ByteaArray:
        return cls(items)


class Int8Array(BinaryArray):
    __slots__ = ()
    OID = 1016
    ELEMENT_OID = 20

    @classmethod
    def of(cls, items: Sequence[int | None]) -> Int8Array:
        return cls([None if i is None else i.to_bytes(8, "big", signed=True) for i in items])


class Int2Array(BinaryArray):
    __slots__ = ()
    OID = 1005
    ELEMENT_OID = 21

    @classmethod
    def of(cls, items: Sequence[int]) -> Int2Array:
        return cls([i.to_bytes(2, "big", signed=True) for i in items])


def _dumper(array: type[BinaryArray]) -> type[Dumper]:
    class ArrayDumper(Dumper):
        format = psycopg.pq.Format.BINARY
        oid = array.OID

        def dump(self, obj: object) -> Buffer:
            assert isinstance(obj, BinaryArray)
            return obj.data

    ArrayDumper.__name__ = f"{array.__name__}Dumper"
    return ArrayDumper


for _array in (TextArray, ByteaArray, Int8Array, Int2Array):
    psycopg.adapters.register_dumper(_array, _dumper(_array))
