"""Behaving fakes of hardware libraries, importable under their real names.

``tests/fakes`` put first on ``sys.path`` makes ``import RPi.GPIO`` and ``import gpiod`` find
these instead of the real (or missing) libraries, so the backends in ``drivers/gpio.py`` run
their real calls on a machine without GPIO hardware. Each fake keeps the real library's API
as far as we use it, with its semantics and error messages, plus a ``fake_*`` handle for the
test side: the wiring (what drives a line) and what the pins really do.
"""
