r"""Hopfield layers for Equinox networks: hopfield-layers' `Hopfield`,
`HopfieldPooling` and `HopfieldLayer` (Ramsauer et al. 2020), one sample per call,
with an energy, a report of the update steps and sparse associations."""

from ._hopfield import Hopfield as Hopfield
from ._lookup import HopfieldLayer as HopfieldLayer
from ._pooling import HopfieldPooling as HopfieldPooling
from ._report import (
    HopfieldResults as HopfieldResults,
    HopfieldSolution as HopfieldSolution,
)
