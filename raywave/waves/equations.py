"""The SAC model's equations, defined once as data (Brian2 syntax).

Both backends are built from, or checked against, these strings:
- the Brian2 backend attaches units and hands them to Brian2;
- `euler_step_reference` evaluates them numerically (plain floats in the canonical units of
  `params.py`), which is what the torch backend's fused kernel is tested against.

Numerics: Euler-Maruyama for every variable except the K+ gate n, which takes the exponential-Euler
update (exact for frozen V; Lambda/tauN reaches ~10/ms). It is written as an "Euler" derivative
`(n_exp - n)/dt` so that one Euler step of it *is* the exponential-Euler step, in every backend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

#: State variables in storage order; C (calcium, nM) is always recorded.
STATE_VARIABLES: tuple[str, ...] = ("V", "n", "C", "S", "R", "A")

#: Units of the state variables in Brian2 (C, S, R, A, n are dimensionless numbers; C's value is nM).
STATE_UNITS: Mapping[str, str] = {"V": "volt", "n": "1", "C": "1", "S": "1", "R": "1", "A": "1"}

#: Subexpressions, in dependency order: name -> (expression, Brian2 unit).
SUBEXPRESSIONS: Mapping[str, tuple[str, str]] = {
    "Minf": ("(1 + tanh((V - V1)/V2))/2", "1"),
    "Ninf": ("(1 + tanh((V - V3)/V4))/2", "1"),
    "Lambda": ("cosh((V - V3)/(2*V4))", "1"),
    "I_Ca": ("-gC*Minf*(V - VC)", "amp"),
    "hA": ("A**2/(gammaA + A**2)", "1"),
}

#: Deterministic right-hand sides d(var)/dt. I_ACh is the lattice coupling current (pA),
#: I_ACh_i = -gA * sum_{j in nbrs(i)} hA_j * (V_i - VA), supplied by the backend's lattice.
DERIVATIVES: Mapping[str, str] = {
    "V": "(-gL*(V - VL) + I_Ca - gK*n*(V - VK) - gsAHP*R**4*(V - VK) + Iext + I_ACh)/Cm",
    "n": "(Ninf + (n - Ninf)*exp(-dt*Lambda/tauN) - n)/dt",
    "C": "(-alphaC*C + C0 + deltaC*I_Ca)/tauC",
    "S": "(alphaS*C**4*(1 - S) - S)/tauS",
    "R": "(alphaR*S*(1 - R) - R)/tauR",
    "A": "-A/tauA + betaA/(1 + exp(-kappaA*(V - V0)))",
}

#: Additive noise: Cm dV = ... dt + sigma dW, i.e. V += sigma/Cm * sqrt(dt) * N(0, 1) per step.
NOISE_TERM = "sigma*xi/Cm"

#: The coupling current per synapse (Brian2 summed variable), pre = neighbour j, post = cell i.
COUPLING = "-gA*hA_pre*(V_post - VA)"


def brian2_equations(noise: bool = True) -> str:
    """The model as a Brian2 equation string (units attached)."""
    lines = []
    for var, rhs in DERIVATIVES.items():
        if var == "V" and noise:
            rhs = f"{rhs} + {NOISE_TERM}"
        lines.append(f"d{var}/dt = {rhs} : {STATE_UNITS[var]}")
    for name, (expr, unit) in SUBEXPRESSIONS.items():
        lines.append(f"{name} = {expr} : {unit}")
    lines.append("I_ACh : amp")
    return "\n".join(lines)


_NUMPY_NS = {"tanh": np.tanh, "cosh": np.cosh, "exp": np.exp, "sqrt": np.sqrt, "log": np.log}


def euler_step_reference(
    state: Mapping[str, np.ndarray], params: Mapping[str, float], neighbour_hA_sum: np.ndarray, dt: float
) -> dict[str, np.ndarray]:
    """One deterministic Euler step evaluated straight from the equation strings (float64 numpy).

    `neighbour_hA_sum` is sum_{j in nbrs(i)} hA_j for every cell (the lattice's part of I_ACh).
    """
    ns: dict[str, object] = dict(_NUMPY_NS)
    ns.update({k: float(v) for k, v in params.items()})
    ns.update({k: np.asarray(v, dtype=np.float64) for k, v in state.items()})
    ns["dt"] = float(dt)
    for name, (expr, _unit) in SUBEXPRESSIONS.items():
        ns[name] = eval(expr, {"__builtins__": {}}, ns)  # noqa: S307 - our own constant strings
    ns["I_ACh"] = -float(params["gA"]) * neighbour_hA_sum * (ns["V"] - float(params["VA"]))
    return {
        var: ns[var] + dt * eval(rhs, {"__builtins__": {}}, ns)  # noqa: S307
        for var, rhs in DERIVATIVES.items()
    }


def noise_std_per_step(params: Mapping[str, float], dt: float) -> float:
    """Standard deviation of the voltage increment from noise in one step (mV)."""
    return float(params["sigma"]) / float(params["Cm"]) * math.sqrt(dt)
