"""GRA: the current gradient and its neighbourhood's mean, weighted by their cosine."""
from __future__ import annotations

from flatbench.core.registry import ConfigError
from flatbench.attacks.differences import DIFFERENCES
from flatbench.attacks.parts import Param
from flatbench.attacks.estimators.base import ESTIMATORS, SAMPLES, Estimator, _neighbour_mean, per_example_cosine

# GRA's labels: the true ones, or the official code's clean prediction.
LABEL_BY = ("truth", "clean_prediction")


@ESTIMATORS.declare("gra", "GRA", published_with="gra_momentum", cost=SAMPLES, differences=DIFFERENCES["gra"], params=(
    Param("n_samples", 20, "integer", lambda v: v >= 1, ">= 1"),
    Param("zeta", 3.5, "number", lambda v: v >= 0, ">= 0 (in units of eps)"),
    Param("label_by", "truth", "choice", choices=LABEL_BY, added_at="truth"),
), doc="""GRA (Zhu et al., ICCV 2023, "Boosting Adversarial Transferability via Gradient Relevance Attack"): N = 20, ζ = 3.5.

Paper symbols → parameters: β (the neighbourhood's upper bound, in units of ε) → ``zeta``,
m (number of samples) → ``n_samples``; the decay indicator's η → ``gra_momentum``'s ``eta``
(0.94). Returns s·g + (1−s)·ḡ with g = ∇ℓ(x), ḡ = mean_i ∇ℓ(x + u_i), u_i ~ U(±ζ·ε), and
s = cos(g, ḡ) per example (the relevance of the current gradient to its neighbourhood). The
method preset ``gra`` pairs it with ``gra_momentum`` (MI-FGSM with the decay indicator). As
TransferAttack's ``gradient/gra.py`` (tested equal to a reference written from it, with the
neighbours' noise shared); its ``last_noise.cuda()`` (which moves the indicator to the GPU
whenever one exists, wherever the images are) is not reproduced: it changes no number.

``label_by``: ``truth`` (the default: the port's true labels) or ``clean_prediction``, as the
authors' own code labels every gradient: by the surrogate's prediction on the clean image,
labelled GRA-OC (``method=gra_oc``). The two agree wherever the surrogate classifies the clean
image correctly. Untargeted only. Tested equal to the port's reference fed those labels.
""")
class GRA(Estimator):
    def __init__(self, n_samples: int = 20, zeta: float = 3.5, label_by: str = "truth"):
        self.n_samples, self.zeta, self.label_by = n_samples, zeta, label_by
        self.check()

    @property
    def label(self) -> str:
        return "GRA-OC" if self.label_by == "clean_prediction" else "GRA"

    def check_loop(self, targeted: bool) -> None:
        if targeted and self.label_by == "clean_prediction":
            raise ConfigError("estimator.label_by=clean_prediction (GRA's official labels) is for untargeted attacks; "
                              "with targeted=true use label_by=truth")

    def __call__(self, ctx, x, y):
        if self.label_by == "clean_prediction":   # at the first step x_eval is the clean image
            if "gra_y" not in ctx.state:
                ctx.state["gra_y"] = ctx.predict(x)
            y = ctx.state["gra_y"]
        g = ctx.grad(x, y, [("g",)])
        mean = _neighbour_mean(ctx, x, y, self.n_samples, self.zeta)
        s = per_example_cosine(g, mean)
        return s * g + (1 - s) * mean

    def evals_per_image(self, step):
        return 1 + self.n_samples

    def describe(self, threat, alpha):
        return ["g0 = ∇ℓ(x_eval)",
                f"ḡ = (1/N)·Σ_i ∇ℓ(x_eval + u_i),  u_i ~ {threat.noise_text.format(z=f'{self.zeta:g}')},  N = {self.n_samples}",
                "s = cos(g0, ḡ) per image   (the gradient's relevance)",
                *(["(every ∇ℓ on ŷ = argmax f(x), the surrogate's prediction on the clean image: the official code)"]
                  if self.label_by == "clean_prediction" else []),
                "g = s·g0 + (1−s)·ḡ"]
