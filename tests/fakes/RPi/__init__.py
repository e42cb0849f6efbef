"""RPi (fake): the package that holds the RPi.GPIO fake."""
