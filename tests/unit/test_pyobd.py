"""python-obd imported without pint (drivers.pyobd), each case in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(code: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# Resident now (ru_maxrss would include what the forking parent had before exec).
_RSS = (
    "import os; rss = int(open('/proc/self/statm').read().split()[1])"
    " * os.sysconf('SC_PAGE_SIZE') / 1e6"
)


def test_python_obd_works_without_pint_and_pint_stays_importable() -> None:
    got = _run(
        f"""
import json, sys
from drivers.pyobd import import_obd
obd = import_obd()
without = "pint" in sys.modules
q = obd.UnitsAndScaling.UAS_IDS[0x07](bytes([0x1F, 0x40]))  # 8000 * 0.25 rpm
conn_cls = obd.OBD.__name__
{_RSS}
import pint
print(json.dumps({{"pint_loaded": without, "magnitude": q.magnitude, "unit": str(q.units),
    "cls": conn_cls, "real_pint": hasattr(pint, "get_application_registry"), "rss": rss}}))
"""
    )
    assert got["pint_loaded"] is False
    assert got["magnitude"] == 2000.0 and got["unit"] == "rpm"
    assert got["cls"] == "OBD"
    assert got["real_pint"] is True, "the stand-in must not stay in sys.modules"


def test_the_stand_in_saves_memory_against_a_plain_import() -> None:
    dump = "import json; print(json.dumps({'rss': rss}))"
    light = _run(f"from drivers.pyobd import import_obd; import_obd(); {_RSS}; {dump}")["rss"]
    plain = _run(f"import obd; {_RSS}; {dump}")["rss"]
    print(f"RSS after importing python-obd: {light} MB without pint, {plain} MB with")
    assert isinstance(light, float) and isinstance(plain, float)
    assert light < plain


def test_an_already_imported_python_obd_is_used_as_it_is() -> None:
    got = _run(
        """
import json, obd
from drivers.pyobd import import_obd
same = import_obd() is obd
print(json.dumps({"same": same, "real": type(obd.UnitsAndScaling.Unit).__module__}))
"""
    )
    assert got["same"] is True
    assert str(got["real"]).startswith("pint")
