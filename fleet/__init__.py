"""Fleet Telemetry: robot telemetry over WebSockets, mission metrics and a lifecycle event stream."""

# The one place the version is written: pyproject.toml, /api/telemetry/info, the OpenAPI schema and
# the fleet_build_info gauge all read it. 1.0.0 is the event and API contract described in the docs.
__version__ = "1.0.0"
