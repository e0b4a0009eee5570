"""The simulated platforms, a module per provider (vapi: REST + calls + control/listen; retell,
twilio: call players), playing TOML call scenarios; common.py holds what they share."""

from console.simulator.common import DeliveryRecord
from console.simulator.scenarios import Scenario, ScenarioError, bundled_scenarios, load_scenario
from console.simulator.vapi import CallEngine, SimulatedPlatform, Webhook

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
