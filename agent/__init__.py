"""telematics-agent: the edge telematics daemon for delivery vans."""

__version__ = "0.1.0"
