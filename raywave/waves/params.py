"""SAC model parameters: the one table of names, defaults, units and provenance.

Canonical units (a coherent system, so plain floats in these units satisfy the equations):
V mV, t ms, g nS, I pA, C_m pF, calcium C nM (dimensionless in Brian2, its value in nM).

Provenance keys:
- K2019: Matzakos-Karvouniari et al., Sci Rep 9 (2019), via the public transcription of its table
  (RetinalChaos.jl `karv_params.json`).
- L2014: Lansdell, Ford & Kutz (2014) code, which K2019 built on.
- RECON: the lattice ACh coupling as reconstructed in the design notes (neighbour-sum placement open).
"""

from __future__ import annotations

from pydantic import Field

from raywave.config import StrictModel


def _p(default: float, unit: str, doc: str, source: str, **kw) -> object:
    return Field(default, description=doc, json_schema_extra={"unit": unit, "provenance": source}, **kw)


class SACParameters(StrictModel):
    """Every parameter of the SAC model; override any of them in YAML under `params:`."""

    Cm: float = _p(22.0, "pF", "membrane capacitance", "K2019", gt=0)
    gL: float = _p(2.0, "nS", "leak conductance", "K2019", ge=0)
    VL: float = _p(-70.0, "mV", "leak reversal", "K2019")
    gC: float = _p(10.0, "nS", "Ca2+ conductance (bifurcation parameter)", "K2019", ge=0)
    VC: float = _p(50.0, "mV", "Ca2+ reversal", "K2019")
    gK: float = _p(10.0, "nS", "fast K+ conductance (bifurcation parameter)", "K2019", ge=0)
    VK: float = _p(-90.0, "mV", "K+ reversal", "K2019")
    V1: float = _p(-20.0, "mV", "Minf half-activation", "K2019")
    V2: float = _p(20.0, "mV", "Minf slope", "K2019", gt=0)
    V3: float = _p(-25.0, "mV", "Ninf half-activation", "K2019")
    V4: float = _p(7.0, "mV", "Ninf slope", "K2019", gt=0)
    tauN: float = _p(5.0, "ms", "K+ gating time constant", "K2019", gt=0)
    gsAHP: float = _p(2.0, "nS", "sAHP conductance (4.6 nS is also plausible)", "K2019", ge=0)
    tauC: float = _p(2000.0, "ms", "calcium time constant", "K2019", gt=0)
    C0: float = _p(88.0, "nM", "calcium influx at rest", "K2019")
    alphaC: float = _p(4865.0 / 1800.0, "1", "calcium extrusion alphaC/HX", "K2019", gt=0)
    deltaC: float = _p(10.503, "nM/pA", "calcium per Ca2+ current", "K2019")
    tauS: float = _p(8300.0, "ms", "saturated-calmodulin time constant", "K2019", gt=0)
    alphaS: float = _p(6.25e-10, "nM^-4", "calmodulin saturation rate", "K2019", ge=0)
    tauR: float = _p(8300.0, "ms", "bound-terminal time constant", "K2019", gt=0)
    alphaR: float = _p(4.25, "1", "terminal binding rate", "K2019", ge=0)
    sigma: float = _p(5.0, "pA*ms^0.5", "voltage noise amplitude (0 turns noise off)", "K2019", ge=0)
    Iext: float = _p(0.0, "pA", "constant external current", "K2019")
    gA: float = _p(0.03, "nS", "ACh coupling conductance: THE control parameter", "RECON", ge=0)
    VA: float = _p(0.0, "mV", "ACh reversal", "RECON")
    tauA: float = _p(540.0, "ms", "ACh decay time constant", "RECON / L2014", gt=0)
    betaA: float = _p(6.0 / 540.0, "1/ms", "ACh production rate", "RECON / L2014", ge=0)
    kappaA: float = _p(0.2, "1/mV", "ACh release slope", "RECON / L2014", gt=0)
    V0: float = _p(-40.0, "mV", "ACh release half-activation", "RECON / L2014")
    gammaA: float = _p(0.1, "1", "ACh receptor half-saturation (squared)", "RECON / L2014", gt=0)


def parameter_table() -> list[dict[str, str]]:
    """Rows (name, default, unit, description, provenance) for docs and `raywave waves params`."""
    rows = []
    for name, field in SACParameters.model_fields.items():
        extra = field.json_schema_extra or {}
        rows.append(
            {
                "name": name,
                "default": f"{field.default:.6g}",
                "unit": str(extra.get("unit", "")),
                "description": field.description or "",
                "provenance": str(extra.get("provenance", "")),
            }
        )
    return rows
