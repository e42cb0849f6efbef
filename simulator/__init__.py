"""An independent simulated van: NMEA talker, ELM327 emulator, ignition line, scenarios, truth."""
