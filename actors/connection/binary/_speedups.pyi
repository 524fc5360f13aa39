"""Types of the optional compiled reader (``_speedups.c``); see ``decoder.py``."""

from actors.connection.binary.node import BinaryNode

def setup(
    node_type: type[BinaryNode],
    single_tokens: tuple[str, ...],
    double_tokens: tuple[tuple[str, ...], ...],
    ad_servers: tuple[str, str, str, str],
) -> None: ...
def read(data: bytes, pos: int, max_depth: int) -> BinaryNode | None: ...
