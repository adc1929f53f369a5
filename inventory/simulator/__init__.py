"""A local DigitalOcean API simulator, for demos, tests and benchmarks.

`Simulator(SimulatorOptions(...))` serves `/v2/images`, image actions and
`/v2/actions` shaped as DigitalOcean shapes them, with its rate limits and
switchable faults.
"""

from inventory.simulator.churn import ChurnReport
from inventory.simulator.options import SimulatorOptions
from inventory.simulator.simulator import Simulator
from inventory.simulator.stats import SimulatorStats

__all__ = ["ChurnReport", "Simulator", "SimulatorOptions", "SimulatorStats"]
