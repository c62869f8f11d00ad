"""Input transformations (the loss is taken through them) and gradient filters.

An input transform maps a batch of B images to ``copies``·B images, stacked copy-major;
the loss is averaged over the copies of each image, so the gradient is the mean gradient
over the transformed views. Randomness comes only from the generator passed in, which the
attack loop keys by (seed, step, neighbour), so results do not depend on chunking.

DIM   (Xie et al., CVPR 2019, arXiv 1803.06978): with probability p, resize to rnd×rnd,
      rnd ~ U{W, …, ⌊rate·W⌋−1}, zero-pad at a random offset to ⌊rate·W⌋, resize back to W.
SIM   (Lin et al., ICLR 2020, arXiv 1908.06281): copies x/2^i, i = 0..m−1.
Admix (Wang et al., ICCV 2021, arXiv 2102.00436): x + η·x', x' another image of the batch
      (a constant, never x itself; from the data set for a batch of one), for ``num_admix``
      partners, each at ``num_scale`` scales x/2^i. As TransferAttack's ``admix.py``, which
      draws x' from the batch and detaches it.
BSR   (Wang et al., CVPR 2024, arXiv 2308.10299): copies of x cut into blocks that are shuffled and
      rotated (block shuffle and rotation).
SIA   (Wang et al., ICCV 2023, arXiv 2309.14700): copies of x cut into a grid of blocks, each
      transformed on its own (shift, flip, rotation by 180°, scaling, noise).
TIM   (Dong et al., CVPR 2019, arXiv 1904.02884): a gradient filter, per-channel convolution
      with a normalised k×k Gaussian whose support spans ±nsig standard deviations.

One module per transform, as TransferAttack's ``input_transformation/`` folder has one file a
method; importing them here, in this order, registers them in the order ``flatbench list`` prints them.
"""
from flatbench.attacks.transforms.base import TRANSFORMS, GradientFilter, InputTransform
from flatbench.attacks.transforms.dim import DIM
from flatbench.attacks.transforms.sim import SIM
from flatbench.attacks.transforms.admix import Admix
from flatbench.attacks.transforms.bsr import BSR
from flatbench.attacks.transforms.sia import SIA, SIA_OPS
from flatbench.attacks.transforms.tim import TIM, gaussian_kernel

__all__ = ["TRANSFORMS", "GradientFilter", "InputTransform", "DIM", "SIM", "Admix", "BSR", "SIA", "SIA_OPS", "TIM",
           "gaussian_kernel"]
