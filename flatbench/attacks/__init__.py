"""Attack engine: one loop (:mod:`.loop`) with pluggable parts."""
from .estimators import ESTIMATORS, Penalty, Plain, Variance
from .factory import METHODS, build_attack, create_attack
from ..keyed import keyed_generator
from .loop import Attack, NonFiniteError
from .optimizers import OPTIMIZERS, mean_abs_normalize
from .parts import Declaration, Param, Part, Parts
from .threat import THREATS, L2Ball, LinfBall
from .transforms import DIM, SIM, TIM, TRANSFORMS, Admix, gaussian_kernel

__all__ = [
    "Attack", "NonFiniteError", "keyed_generator", "create_attack", "build_attack", "METHODS",
    "ESTIMATORS", "OPTIMIZERS", "TRANSFORMS", "THREATS", "Penalty", "Plain", "Variance",
    "mean_abs_normalize", "Declaration", "Param", "Part", "Parts", "LinfBall", "L2Ball", "DIM", "SIM", "TIM", "Admix", "gaussian_kernel",
]
