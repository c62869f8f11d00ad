"""flatbench: transfer attacks that seek flat local maxima (PGN, GNP) and their companions."""
__version__ = "0.3.0"

from flatbench.api import craft_set, evaluate_transfer, load_dataset, load_zoo  # noqa: E402
from flatbench.attacks import Attack, create_attack  # noqa: E402
from flatbench.entry.listing import list_data, list_experiments, list_methods, list_models, list_zoos  # noqa: E402
from flatbench.models import load_model  # noqa: E402

__all__ = ["Attack", "create_attack", "load_model", "load_dataset", "load_zoo", "craft_set", "evaluate_transfer",
           "list_methods", "list_models", "list_zoos", "list_experiments", "list_data", "__version__"]
