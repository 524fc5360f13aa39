"""The committed protobuf module: reproducible, and field-for-field Baileys' WAProto."""

from __future__ import annotations

import re
from pathlib import Path

from google.protobuf import descriptor_pb2

from actors.connection.proto import regenerate, wa_pb2
from tests.baileys_peer import BaileysPeer

PROTO_DIR = Path(regenerate.__file__).parent


def test_regenerating_yields_the_committed_files(tmp_path: Path) -> None:
    """Running the documented protoc command again gives byte-identical wa_pb2.py and .pyi."""
    generated = regenerate.regenerate(tmp_path)
    assert [path.name for path in generated] == ["wa_pb2.py", "wa_pb2.pyi"]
    for path in generated:
        assert path.read_bytes() == (PROTO_DIR / path.name).read_bytes(), path.name


_SCALARS = {
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL: "bool",
    descriptor_pb2.FieldDescriptorProto.TYPE_BYTES: "bytes",
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING: "string",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT32: "uint32",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT64: "uint64",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT32: "int32",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT64: "int64",
    descriptor_pb2.FieldDescriptorProto.TYPE_SFIXED32: "sfixed32",
}
_BLOCK = re.compile(r"^\s*(message|enum|oneof)\s+(\w+)\s*\{")
_FIELD = re.compile(r"^\s*(optional|repeated|required)?\s*([\w.]+)\s+(\w+)\s*=\s*(\d+)")
_VALUE = re.compile(r"^\s*(\w+)\s*=\s*(-?\d+)\s*;")


def _parse_waproto(text: str) -> dict[str, dict[str, tuple[str, str, int]]]:
    """Map each message/enum full name to {member: (label, type, number)} from WAProto text.

    WAProto.proto is generated with one declaration a line, so a line scanner
    with a stack of open blocks is enough (enum values have label and type "").
    A ``oneof`` opens a block too but is no scope: its fields belong to the message.
    """
    blocks: dict[str, dict[str, tuple[str, str, int]]] = {}
    stack: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.split("//")[0]
        if match := _BLOCK.match(line):
            stack.append((match.group(1), match.group(2)))
            if match.group(1) != "oneof":
                blocks[_scope(stack)] = {}
            continue
        if line.strip() == "}":
            if stack:
                stack.pop()
            continue
        if not stack:
            continue
        current = _scope(stack)
        if stack[-1][0] == "enum":
            if value := _VALUE.match(line):
                blocks[current][value.group(1)] = ("", "", int(value.group(2)))
        elif field := _FIELD.match(line):
            label, type_, name, number = field.groups()
            blocks[current][name] = (label or "", type_.split(".")[-1], int(number))
    return blocks


def _scope(stack: list[tuple[str, str]]) -> str:
    return ".".join(name for kind, name in stack if kind != "oneof")


def _ours(
    file: descriptor_pb2.FileDescriptorProto,
) -> dict[str, dict[str, tuple[str, str, int]]]:
    """The same map for our descriptor, spelled as the .proto text spells it."""
    blocks: dict[str, dict[str, tuple[str, str, int]]] = {}
    labels = {
        descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED: "repeated",
        descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL: "optional",
    }

    def enum(prefix: str, value: descriptor_pb2.EnumDescriptorProto) -> None:
        blocks[prefix + value.name] = {v.name: ("", "", v.number) for v in value.value}

    def message(prefix: str, value: descriptor_pb2.DescriptorProto) -> None:
        name = prefix + value.name
        blocks[name] = {
            f.name: (
                labels[f.label] if f.proto3_optional or f.label != f.LABEL_OPTIONAL else "",
                _SCALARS.get(f.type) or f.type_name.split(".")[-1],
                f.number,
            )
            for f in value.field
        }
        for nested in value.nested_type:
            message(name + ".", nested)
        for nested_enum in value.enum_type:
            enum(name + ".", nested_enum)

    for top in file.message_type:
        message("", top)
    for top_enum in file.enum_type:
        enum("", top_enum)
    return blocks


def test_every_field_and_enum_value_matches_baileys_waproto(baileys_peer: BaileysPeer) -> None:
    """Each message, field (label, type, number) and enum value of ours is WAProto's."""
    waproto = baileys_peer.root / "node_modules" / "baileys" / "WAProto" / "WAProto.proto"
    theirs = _parse_waproto(waproto.read_text())
    ours = _ours(descriptor_pb2.FileDescriptorProto.FromString(wa_pb2.DESCRIPTOR.serialized_pb))
    assert len(ours) >= 25
    for block, members in ours.items():
        assert block in theirs, f"{block} is not in WAProto"
        for member, spelled in members.items():
            assert theirs[block].get(member) == spelled, f"{block}.{member}"
    # Whole enums, not just a subset: a value we lack would decode as unknown.
    for block, members in ours.items():
        if all(label == "" and type_ == "" for label, type_, _ in members.values()):
            assert members == theirs[block], block


def test_handshake_message_bytes_use_baileys_field_numbers() -> None:
    """A ClientHello encodes as field 2 holding field 1 (ephemeral), as on the wire."""
    message = wa_pb2.HandshakeMessage(
        clientHello=wa_pb2.HandshakeMessage.ClientHello(ephemeral=b"\x01" * 32)
    )
    assert message.SerializeToString() == b"\x12\x22\x0a\x20" + b"\x01" * 32


def test_client_payload_round_trips() -> None:
    """A registration-shaped ClientPayload decodes back to the same fields."""
    props = wa_pb2.DeviceProps(
        os="Mac OS",
        platformType=wa_pb2.DeviceProps.CHROME,
        version=wa_pb2.DeviceProps.AppVersion(primary=10, secondary=15, tertiary=7),
        historySyncConfig=wa_pb2.DeviceProps.HistorySyncConfig(storageQuotaMb=10240),
    )
    payload = wa_pb2.ClientPayload(
        passive=False,
        pull=False,
        connectType=wa_pb2.ClientPayload.WIFI_UNKNOWN,
        connectReason=wa_pb2.ClientPayload.USER_ACTIVATED,
        userAgent=wa_pb2.ClientPayload.UserAgent(
            platform=wa_pb2.ClientPayload.UserAgent.WEB,
            appVersion=wa_pb2.ClientPayload.UserAgent.AppVersion(
                primary=2, secondary=3000, tertiary=1035194821
            ),
        ),
        webInfo=wa_pb2.ClientPayload.WebInfo(
            webSubPlatform=wa_pb2.ClientPayload.WebInfo.WEB_BROWSER
        ),
        devicePairingData=wa_pb2.ClientPayload.DevicePairingRegistrationData(
            eKeytype=b"\x05", deviceProps=props.SerializeToString()
        ),
    )
    decoded = wa_pb2.ClientPayload.FromString(payload.SerializeToString())
    assert decoded == payload
    assert decoded.HasField("passive") and decoded.passive is False
    assert wa_pb2.DeviceProps.FromString(decoded.devicePairingData.deviceProps) == props
