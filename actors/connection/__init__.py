"""The WhatsApp-Web protocol core (sans-IO) and, in ``actor``, the connection actor.

Everything re-exported here is pure: bytes in, events and bytes out, no sockets,
no clocks, no files (the h11/wsproto shape). The actor that does the I/O lives in
``actors.connection.actor`` and is not imported here, so the sandbox and tests can
use the core without pulling in trio, sockets or the runtime.

Since 0.1.0.
"""

from actors.connection.binary import BinaryNode, DecodeError, Jid, decode_node, encode_node
from actors.connection.certs import RootKey, verify_cert_chain
from actors.connection.client import ClientConnection
from actors.connection.client_state import (
    TERMINAL_EVENTS,
    ClientEvent,
    ClientState,
    Closed,
    DisconnectPolicy,
    DisconnectReason,
    HandshakeComplete,
    IqResult,
    LoginSuccess,
    NodeReceived,
    Opened,
    PairSuccess,
    Ping,
    PreKeyCount,
    PreKeyUploadResult,
    QrCode,
    RestartRequired,
    RoutingInfo,
    StreamError,
)
from actors.connection.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from actors.connection.noise import NoiseInitiator, NoiseResponder, NoiseTransport
from actors.connection.pairing import PairingCredsUpdate, verify_pair_success
from actors.connection.payload import Browser, ClientIdentity
from actors.connection.prekeys import UploadPlan, plan_upload, upload_count
from actors.connection.qr import QrError, build_qr, parse_qr

__all__ = [
    "TERMINAL_EVENTS",
    "BinaryNode",
    "Browser",
    "ClientConnection",
    "ClientEvent",
    "ClientIdentity",
    "ClientState",
    "Closed",
    "DecodeError",
    "DisconnectPolicy",
    "DisconnectReason",
    "HandshakeComplete",
    "IqResult",
    "Jid",
    "LocalProtocolError",
    "LoginSuccess",
    "NodeReceived",
    "NoiseInitiator",
    "NoiseResponder",
    "NoiseTransport",
    "Opened",
    "PairSuccess",
    "PairingCredsUpdate",
    "Ping",
    "PreKeyCount",
    "PreKeyUploadResult",
    "ProtocolError",
    "QrCode",
    "QrError",
    "RemoteProtocolError",
    "RestartRequired",
    "RootKey",
    "RoutingInfo",
    "StreamError",
    "UploadPlan",
    "build_qr",
    "decode_node",
    "encode_node",
    "parse_qr",
    "plan_upload",
    "upload_count",
    "verify_cert_chain",
    "verify_pair_success",
]
