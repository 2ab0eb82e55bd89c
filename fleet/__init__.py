"""Fleet Telemetry: robot telemetry over WebSockets, mission metrics and a lifecycle event stream."""

__version__ = "0.1.0"
