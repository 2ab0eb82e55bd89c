"""A simulated fleet: robots that stream realistic telemetry through the robot client library.

Plain asyncio, no Django: `simulate(config, credentials)` drives the robots and returns Stats, so the
`simulate_fleet` command, the tests and the benchmarks all call the same code. Provisioning robots and
writing missions to Redis live with the caller (see telemetry/management/commands/simulate_fleet.py).

Modules: behaviour (a robot's health over time), robot (its schedule, on a `fleet_client.RobotClient`),
stats (what the fleet did), missions (mission stream updates), fleet (all of them together).
"""

from __future__ import annotations

from telemetry.simulator.behaviour import RobotBehaviour
from telemetry.simulator.fleet import simulate
from telemetry.simulator.missions import MissionPlanner, write_missions
from telemetry.simulator.robot import SimulatedRobot, SimulationConfig
from telemetry.simulator.stats import Stats, percentile

__all__ = [
    "MissionPlanner",
    "RobotBehaviour",
    "SimulatedRobot",
    "SimulationConfig",
    "Stats",
    "percentile",
    "simulate",
    "write_missions",
]
