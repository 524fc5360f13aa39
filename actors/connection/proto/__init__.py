"""The WhatsApp protobuf messages used by the protocol core (generated from ``wa.proto``).

``from actors.connection.proto import wa_pb2`` gives ``HandshakeMessage``,
``CertChain``, ``ClientPayload``, ``DeviceProps`` and the ``ADV*`` messages.
Since 0.1.0.
"""
