"""The simulated platform: a local Vapi stand-in that plays TOML call scenarios."""

from console.simulator.platform import CallEngine, DeliveryRecord, SimulatedPlatform, Webhook
from console.simulator.scenarios import Scenario, ScenarioError, bundled_scenarios, load_scenario

__all__ = [
    "CallEngine",
    "DeliveryRecord",
    "Scenario",
    "ScenarioError",
    "SimulatedPlatform",
    "Webhook",
    "bundled_scenarios",
    "load_scenario",
]
