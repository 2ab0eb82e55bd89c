"""How a simulated robot's health evolves: battery, CPU, memory and latency over time."""

from __future__ import annotations

import math
import random


class RobotBehaviour:
    """One robot's health over time. `step(dt)` advances it by dt seconds and returns the four metrics.

    The battery drains with load and recharges on a dock once low; CPU wanders around a per-robot
    baseline with occasional bursts of work; memory creeps up and drops when a process restarts;
    latency jitters around a base with rare spikes. Advancing by dt keeps it independent of the rate.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.battery = rng.uniform(40.0, 100.0)
        self.charging = False
        self.drain = rng.uniform(0.05, 0.2)  # % per second at idle
        self.charge_rate = rng.uniform(0.8, 1.5)  # % per second on the dock
        self.cpu_base = rng.uniform(15.0, 55.0)
        self.cpu = self.cpu_base
        self.burst = 0.0  # seconds of extra work left
        self.memory = rng.uniform(30.0, 60.0)
        self.latency_base = rng.uniform(4.0, 30.0)

    def step(self, dt: float) -> dict[str, float]:
        rng = self.rng
        dt = max(0.0, min(dt, 60.0))
        # CPU: mean-reverting noise, plus a burst of work now and then.
        if self.burst <= 0 and rng.random() < 0.02 * dt:
            self.burst = rng.uniform(3.0, 15.0)
        self.burst = max(0.0, self.burst - dt)
        target = min(95.0, self.cpu_base + (35.0 if self.burst > 0 else 0.0))
        pull = 1 - math.exp(-0.5 * dt)
        self.cpu += (target - self.cpu) * pull + rng.gauss(0, 3.0) * math.sqrt(max(dt, 0.01))
        self.cpu = _clamp(self.cpu, 0.0, 100.0)
        # Memory: slow creep, sometimes freed by a restart.
        self.memory += rng.uniform(0.0, 0.05) * dt
        if self.memory > 85.0 or rng.random() < 0.002 * dt:
            self.memory -= rng.uniform(15.0, 30.0)
        self.memory = _clamp(self.memory + rng.gauss(0, 0.2), 5.0, 100.0)
        # Battery: drains faster under load, docks below 15%, undocks when nearly full.
        if self.charging:
            self.battery += self.charge_rate * dt
            if self.battery >= rng.uniform(95.0, 100.0):
                self.charging = False
        else:
            self.battery -= self.drain * (1 + self.cpu / 100.0) * dt
            if self.battery <= 15.0:
                self.charging = True
        self.battery = _clamp(self.battery, 0.0, 100.0)
        # Latency: jitter around a base, a rare spike (a Wi-Fi handover).
        latency = self.latency_base * rng.lognormvariate(0, 0.25)
        if rng.random() < 0.01:
            latency += rng.uniform(100.0, 400.0)
        return {
            "cpu_usage": round(self.cpu, 1),
            "memory_usage": round(self.memory, 1),
            "network_latency_ms": round(latency, 1),
            "battery_percentage": round(self.battery, 1),
        }


def _clamp(value: float, low: float, high: float) -> float:
    return low if value < low else high if value > high else value
