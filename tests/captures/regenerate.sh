#!/bin/sh
# Regenerate the oracle's expected fixes beside each capture with Debian's gpsd (gpsd-clients).
# gpsdecode decodes NMEA from stdin without a daemon; we keep its TPV (time-position-velocity)
# reports verbatim. Checked with gpsd 3.22 (Debian bookworm).
set -eu
cd "$(dirname "$0")"
for capture in *.nmea; do
    gpsdecode --json < "$capture" | grep '"class":"TPV"' > "${capture%.nmea}.gpsd.jsonl"
done
