"""The WhatsApp binary node codec (dictionary v3, Baileys v7 on the wire). Sans-IO.

``encode_node(node) -> bytes`` writes one uncompressed frame (flags byte 0, then
the node) exactly as Baileys' ``encodeBinaryNode`` does; ``decode_node(frame)``
reads one frame, inflating it when flagged compressed, and raises only
``DecodeError`` on bad input. ``BinaryNode`` is the node, ``Jid`` a parsed JID.

Since 0.1.0.
"""

from __future__ import annotations

from actors.connection.binary.decoder import MAX_FRAME_SIZE, MAX_STRING_DEPTH, decode_node
from actors.connection.binary.encoder import MAX_DEPTH, NodeTemplate, encode_node
from actors.connection.binary.errors import DecodeError, EncodeError, JidError, MissingNodeError
from actors.connection.binary.jid import (
    BROADCAST,
    C_US,
    G_US,
    HOSTED,
    HOSTED_LID,
    LID,
    NEWSLETTER,
    S_WHATSAPP_NET,
    SERVER_JID,
    Domain,
    Jid,
)
from actors.connection.binary.node import BinaryNode, Content
from actors.connection.binary.tags import FLAG_COMPRESSED, PACKED_MAX, Tag

__all__ = [
    "BROADCAST",
    "C_US",
    "FLAG_COMPRESSED",
    "G_US",
    "HOSTED",
    "HOSTED_LID",
    "LID",
    "MAX_DEPTH",
    "MAX_FRAME_SIZE",
    "MAX_STRING_DEPTH",
    "NEWSLETTER",
    "PACKED_MAX",
    "SERVER_JID",
    "S_WHATSAPP_NET",
    "BinaryNode",
    "Content",
    "DecodeError",
    "Domain",
    "EncodeError",
    "Jid",
    "JidError",
    "MissingNodeError",
    "NodeTemplate",
    "Tag",
    "decode_node",
    "encode_node",
]
