"""The sandbox: a WhatsApp-protocol server on loopback with a simulated phone.

Import from the modules (``sandbox.server.open_sandbox``, ``sandbox.core.ServerCore``,
...): this package imports nothing itself, so ``sandbox.cli`` stays light for the
``baileys-trio`` command line. See docs/sandbox.md. Since 0.1.0.
"""
