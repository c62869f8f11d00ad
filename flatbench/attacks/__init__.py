"""Attack engine: one loop (:mod:`.loop`) with pluggable parts."""
from flatbench.attacks.estimators import ESTIMATORS, Penalty, Plain, Variance
from flatbench.attacks.factory import METHODS, create_attack
from flatbench.attacks.spec import build_attack
from flatbench.core.keyed import keyed_generator
from flatbench.attacks.loop import Attack, NonFiniteError
from flatbench.attacks.optimizers import OPTIMIZERS, mean_abs_normalize
from flatbench.attacks.parts import Declaration, Param, Part, Parts
from flatbench.attacks.threat import THREATS, L2Ball, LinfBall
from flatbench.attacks.transforms import DIM, SIM, TIM, TRANSFORMS, Admix, gaussian_kernel

__all__ = [
    "Attack", "NonFiniteError", "keyed_generator", "create_attack", "build_attack", "METHODS",
    "ESTIMATORS", "OPTIMIZERS", "TRANSFORMS", "THREATS", "Penalty", "Plain", "Variance",
    "mean_abs_normalize", "Declaration", "Param", "Part", "Parts", "LinfBall", "L2Ball", "DIM", "SIM", "TIM", "Admix", "gaussian_kernel",
]
