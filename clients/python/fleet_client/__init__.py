"""Fleet Telemetry's robot client: `RobotClient` keeps every submitted frame until the server acks it."""

from __future__ import annotations

from fleet_client.client import RobotClient
from fleet_client.events import ClientEvent
from fleet_client.reconnect import SUBPROTOCOL

__all__ = ["SUBPROTOCOL", "ClientEvent", "RobotClient"]
