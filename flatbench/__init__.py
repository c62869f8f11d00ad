"""flatbench: transfer attacks that seek flat local maxima (PGN, GNP) and their companions."""
__version__ = "0.1.0"

from .attacks import Attack, create_attack  # noqa: E402

__all__ = ["Attack", "create_attack", "__version__"]
