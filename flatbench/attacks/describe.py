"""``Attack.describe``: the assembled loop written out from its parts with their values, one
screen per method (``flatbench describe`` prints it; docs/methods.md is made of it)."""
from __future__ import annotations


def describe(attack) -> str:
    """The assembled loop, written out from the parts with their values: what this attack
    computes, on one screen (``flatbench describe METHOD`` prints it)."""

    def frac(v: float) -> str:  # lengths as the configs write them, in 1/255 units
        return f"{v * 255:g}/255"

    est, opt = attack.estimator, attack.optimizer
    parts = (f"optimizer {opt.name} ({opt.label}), estimator {est.name}"
             f"{' (' + est.label + ')' if est.label else ''}, transforms "
             f"{', '.join(p.name for p in (*attack.transforms, *attack.filters)) or 'none'}")
    ce = "−CE(f({}), y_target)" if attack.targeted else "CE(f({}), y)"
    if not attack.transforms:
        loss = [f"ℓ(z) = {ce.format('z')}"]
    elif attack.copies == 1:
        loss = [f"ℓ(z) = {ce.format('w')}, w = {'∘'.join(t.label for t in reversed(attack.transforms))}(z):"]
    else:
        loss = [f"ℓ(z) = the mean of {ce.format('w')} over the {attack.copies} views w of z"
                f"{' (the transforms in this order)' if len(attack.transforms) > 1 else ''}:"]
    loss += [f"    {t.describe()}" for t in attack.transforms]
    rules = getattr(attack, "rules", None) or {}
    lines = [f"{attack.label}   [{parts}]",
             f"ε = {frac(attack.eps)} ({attack.norm}), T = {attack.steps}, α = "
             f"{rules['alpha'] + ' = ' if 'alpha' in rules else ''}{frac(attack.alpha)}"
             f"{', targeted' if attack.targeted else ''}",
             # The preset's lengths written as rules of ε (flatbench/attacks/scaling.py), with their values here.
             *([", ".join(f"{k} = {v}" for k, v in rules.items() if k != "alpha") + "   (rules of ε)"]
               if any(k != "alpha" for k in rules) else []),
             *([f"budget = {attack.budget['budget']} gradient evaluations per image: {attack.budget['knob']} = "
                f"{attack.budget['value']} ({attack.budget['per_image']} per image)"] if attack.budget else []),
             *loss,
             "δ = 0",
             f"for t = 1..{attack.steps}:",
             f"    x_eval = {opt.eval_point_text(attack.threat)}",
             *("    " + ln for ln in est.describe(attack.threat, frac(attack.alpha))),
             *("    " + f.describe() for f in attack.filters),
             f"    {opt.update_text()}",
             *([f"    {opt.step_size_text()}"] if opt.step_size_text() else []),
             # An optimizer with its own per-pixel step (GRA's α_t = M ⊙ α) steps by it, not by α.
             f"    {attack.threat.step_text.replace('α·', 'α_t ⊙ ') if opt.step_size_text() else attack.threat.step_text}",
             "return x + δ   (flatbench then rounds it to 8 bits)"]
    return "\n".join(lines)
