"""A Mixpanel-compatible local server: the test double, and the base of the offline sandbox."""

from mixpanel_mcp.double.app import build_app, running
from mixpanel_mcp.double.state import DoubleState, Fault, Project, RecordedRequest

__all__ = ["DoubleState", "Fault", "Project", "RecordedRequest", "build_app", "running"]
