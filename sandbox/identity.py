"""The sandbox server's keys: its own root, an intermediate, and the Noise static key.

The root public key is what a client must trust instead of WhatsApp's
(``RootKey(identity.root_public_key)``); Baileys does not check certificates at
all, our client does. Since 0.1.0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.connection.certs import RootKey, make_cert_chain
from stores.creds import KeyPair
from stores.keys import generate_key_pair


@dataclass(frozen=True)
class ServerIdentity:
    """Root, intermediate and static key pairs, and the encoded CertChain for the static key."""

    root_key: KeyPair
    intermediate_key: KeyPair
    static_key: KeyPair
    cert_chain: bytes = field(repr=False)

    @classmethod
    def generate(cls, *, root_key: KeyPair | None = None) -> ServerIdentity:
        """Fresh keys (the root too, unless ``root_key`` is given) and their chain."""
        root = root_key if root_key is not None else generate_key_pair()
        intermediate = generate_key_pair()
        static = generate_key_pair()
        chain = make_cert_chain(
            root_private_key=root.private,
            intermediate_private_key=intermediate.private,
            server_static_public=static.public,
        )
        return cls(
            root_key=root, intermediate_key=intermediate, static_key=static, cert_chain=chain
        )

    @property
    def root_public_key(self) -> bytes:
        """The 32-byte root public key a client must trust."""
        return self.root_key.public

    @property
    def root(self) -> RootKey:
        """The trust anchor for ``NoiseInitiator(root=...)``."""
        return RootKey(self.root_key.public)
