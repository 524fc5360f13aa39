"""Message content: ``wa.Message`` from what a bot sends, and text out of what it receives.

Since 0.2.0.
"""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.message import DecodeError

from actors.connection.proto import wa_pb2
from actors.messaging.errors import ContentError
from actors.messaging.padding import pad_random_max16, unpad_random_max16

Content = wa_pb2.Message | Mapping[str, object]
"""What ``send_message`` takes: a ``wa_pb2.Message`` or ``{"text": "..."}``."""


def to_message(content: Content) -> wa_pb2.Message:
    """A ``wa.Message`` from ``{"text": ...}`` or a message given as is."""
    if isinstance(content, wa_pb2.Message):
        return content
    if isinstance(content, Mapping):
        unknown = set(content) - {"text"}
        if unknown:
            raise ContentError(
                f"unsupported content fields {sorted(unknown)}; give a wa_pb2.Message"
            )
        text = content.get("text")
        if not isinstance(text, str):
            raise ContentError(f"content.text must be a string, got {type(text).__name__}")
        return wa_pb2.Message(conversation=text)
    raise ContentError(
        f"content must be a wa_pb2.Message or a mapping, got {type(content).__name__}"
    )


def text_of(message: wa_pb2.Message) -> str | None:
    """The text of a text message (conversation or extended text), else None."""
    if message.HasField("conversation"):
        return message.conversation
    if message.HasField("extendedTextMessage") and message.extendedTextMessage.HasField("text"):
        return message.extendedTextMessage.text
    return None


def encode_padded(message: wa_pb2.Message) -> bytes:
    """The plaintext a Signal cipher encrypts: the message bytes, padded."""
    return pad_random_max16(message.SerializeToString())


def decode_padded(plaintext: bytes) -> wa_pb2.Message:
    """Undo :func:`encode_padded`; bad padding or protobuf is a typed error."""
    return parse_message(unpad_random_max16(plaintext))


def parse_message(data: bytes) -> wa_pb2.Message:
    """A ``wa.Message`` from its bytes; :class:`ContentError` if they are not one."""
    message = wa_pb2.Message()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise ContentError(f"plaintext is not a wa.Message: {exc}") from exc
    return message


def device_sent(destination: str, message: wa_pb2.Message) -> wa_pb2.Message:
    """The copy for our own other devices: ``deviceSentMessage{destinationJid, message}``."""
    return wa_pb2.Message(
        deviceSentMessage=wa_pb2.Message.DeviceSentMessage(
            destinationJid=destination, message=message
        )
    )


def unwrap_device_sent(message: wa_pb2.Message) -> wa_pb2.Message:
    """The inner message of a ``deviceSentMessage``, else the message itself (as Baileys)."""
    if message.HasField("deviceSentMessage") and message.deviceSentMessage.HasField("message"):
        return message.deviceSentMessage.message
    return message
