"""An MCP server for the Mixpanel API."""

__version__ = "0.1.0"
