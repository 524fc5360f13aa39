from __future__ import annotations

# Imported to be found by name: the codec's tests run once per decoder reader.
from tests.decoder_readers import each_reader

__all__ = ["each_reader"]
