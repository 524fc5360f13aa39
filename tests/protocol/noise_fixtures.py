"""Shared set-up for the Noise tests: a sandbox-style server identity and a wired pair."""

from __future__ import annotations

from dataclasses import dataclass

from actors.connection.certs import RootKey, make_cert_chain
from actors.connection.noise import (
    ClientFinish,
    ClientHello,
    Finish,
    Hello,
    NoiseInitiator,
    NoiseResponder,
    ServerHello,
    generate_key_pair,
)
from stores.creds import KeyPair


@dataclass(frozen=True)
class ServerIdentity:
    """A root key, the server's static key and the chain binding them."""

    root_key: KeyPair
    static_key: KeyPair
    cert_chain: bytes

    @property
    def root(self) -> RootKey:
        return RootKey(self.root_key.public, 0)


def make_server_identity() -> ServerIdentity:
    """A fresh root, intermediate and static key, with a valid chain."""
    root_key, intermediate, static_key = (generate_key_pair() for _ in range(3))
    chain = make_cert_chain(
        root_private_key=root_key.private,
        intermediate_private_key=intermediate.private,
        server_static_public=static_key.public,
    )
    return ServerIdentity(root_key=root_key, static_key=static_key, cert_chain=chain)


def make_pair(
    identity: ServerIdentity, *, routing_info: bytes | None = None
) -> tuple[NoiseInitiator, NoiseResponder, KeyPair]:
    """A client trusting ``identity``'s root, the matching server, and the client noise key."""
    noise_key = generate_key_pair()
    client = NoiseInitiator(noise_key=noise_key, root=identity.root, routing_info=routing_info)
    server = NoiseResponder(static_key=identity.static_key, cert_chain=identity.cert_chain)
    return client, server, noise_key


def handshake(
    client: NoiseInitiator, server: NoiseResponder, payload: bytes
) -> tuple[ClientHello, ServerHello, ClientFinish]:
    """Run the three messages in memory; return the events each side saw."""
    server.receive_data(client.send(Hello()))
    client_hello = server.next_event()
    assert isinstance(client_hello, ClientHello)
    client.receive_data(server.send(Hello()))
    server_hello = client.next_event()
    assert isinstance(server_hello, ServerHello)
    server.receive_data(client.send(Finish(payload)))
    client_finish = server.next_event()
    assert isinstance(client_finish, ClientFinish)
    return client_hello, server_hello, client_finish
