"""Tag bytes of the binary node format (Baileys v7, lib/WABinary/constants.js ``TAGS``).

Since 0.1.0.
"""

from __future__ import annotations

import enum


class Tag(enum.IntEnum):
    """A byte that says how the next item is written."""

    LIST_EMPTY = 0
    DICTIONARY_0 = 236
    DICTIONARY_1 = 237
    DICTIONARY_2 = 238
    DICTIONARY_3 = 239
    INTEROP_JID = 245  # read only: we never write it
    FB_JID = 246  # read only: we never write it
    AD_JID = 247
    LIST_8 = 248
    LIST_16 = 249
    JID_PAIR = 250
    HEX_8 = 251
    BINARY_8 = 252
    BINARY_20 = 253
    BINARY_32 = 254
    NIBBLE_8 = 255


#: Longest string written packed (NIBBLE_8 / HEX_8): the length byte keeps 7 bits.
PACKED_MAX = 127

#: Flags-byte bit meaning "the rest of the frame is zlib (RFC 1950) compressed".
FLAG_COMPRESSED = 0x02
