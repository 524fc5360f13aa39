"""The message layer: stanzas to message events and back, sans-IO over a Signal repository.

``incoming`` parses ``<message>`` stanzas and builds acks, receipts and retry
receipts; ``outgoing`` builds message stanzas; ``queries`` the usync and pre-key
bundle iqs; ``content`` turns ``wa.Message`` into padded plaintext and back;
``receive`` decrypts a stanza in one store transaction; ``send`` encrypts one
message for many devices in one store transaction.

Since 0.2.0.
"""
