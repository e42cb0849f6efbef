"""Errors: the agent's exception tree."""


class AgentError(Exception):
    """Root of every error the agent raises on purpose."""


class ConfigError(AgentError, ValueError):
    """A configuration file is missing, unreadable, or holds a bad value."""


class SpoolError(AgentError, OSError):
    """The on-disk spool cannot be opened or written."""


class PublishError(AgentError, ConnectionError):
    """The broker refused us or cannot be reached."""
