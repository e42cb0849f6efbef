"""Driver configuration: every driver setting comes from its config key, or is listed as not one."""

from __future__ import annotations

import dataclasses

import pytest

from agent import config
from agent.driverconfig import UNCONFIGURED, gnss_settings, gpio_settings, obd_settings
from drivers.gnss import GNSSSettings
from drivers.gpio import GPIOSettings
from drivers.obd import OBDSettings


@pytest.mark.parametrize(
    ("settings_cls", "section_cls"),
    [
        (GNSSSettings, config.GNSSSection),
        (OBDSettings, config.OBDSection),
        (GPIOSettings, config.IgnitionSection),
    ],
)
def test_every_driver_setting_has_a_config_key_or_a_reason(
    settings_cls: type, section_cls: type
) -> None:
    keys = {f.name for f in dataclasses.fields(section_cls)}
    settings = {f.name for f in dataclasses.fields(settings_cls)}
    missing = settings - keys - UNCONFIGURED[settings_cls.__name__]
    assert not missing, f"{settings_cls.__name__} fields with no config key: {missing}"
    assert UNCONFIGURED[settings_cls.__name__] <= settings


def test_values_come_from_the_config_and_overrides_win() -> None:
    cfg = config.loads(
        '[device]\nid = "v"\n[gnss]\nport = "/dev/ttyACM7"\nbaud = 115200\n'
        '[obd]\nfuel_type = "lpg"\nfast_hz = 4.0\n'
        '[ignition]\nbackend = "gpiod"\npin = 5\npower_hold_pin = 6\n'
    )
    g = gnss_settings(cfg.gnss, set_system_clock=True)
    assert (g.port, g.baud, g.set_system_clock) == ("/dev/ttyACM7", 115200, True)
    o = obd_settings(cfg.obd)
    assert (o.fuel_type, o.fast_hz, o.protocol) == ("lpg", 4.0, "")
    p = gpio_settings(cfg.ignition, power_hold_pin=-1)
    assert (p.backend, p.pin, p.power_hold_pin) == ("gpiod", 5, -1)
