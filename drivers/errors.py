"""Errors: the drivers' exception tree."""


class DriverError(Exception):
    """Root of every error a driver raises on purpose."""


class DeviceUnavailableError(DriverError, OSError):
    """The device cannot be opened or has disappeared."""


class ProtocolError(DriverError, ValueError):
    """The device sent something that breaks its protocol."""
