"""Keyed random streams: a generator whose draws depend on a key alone, never on draw order,
chunking, ranks or what ran before. The attack loop keys by (seed, batch, step, neighbour),
flatness measurement by (seed, image id, tag), randomized defenses by the image's own bytes
and their seed, so any part can be recomputed alone and give the same numbers."""
from __future__ import annotations

import hashlib
from typing import Hashable, Tuple, Union

import torch


def keyed_generator(key: Union[bytes, Tuple[Hashable, ...]], device: Union[str, torch.device] = "cpu",
                    salt: bytes = b"") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded from BLAKE2b(``key``, 8 bytes, keyed by ``salt``);
    a tuple key is hashed through its ``repr``."""
    data = key if isinstance(key, bytes) else repr(key).encode()
    digest = hashlib.blake2b(data, digest_size=8, key=salt).digest()
    gen = torch.Generator(device=device)
    gen.manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
    return gen
