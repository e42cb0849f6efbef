"""Status: the file the running daemon rewrites every few seconds, and `telematics-agent status`.

The daemon writes ``status.json`` into ``$RUNTIME_DIRECTORY`` when systemd gives it one (tmpfs:
no SD-card wear), else into its state directory, atomically (temporary file, rename), so a reader
never sees half a file. ``status`` reads it and says whether the daemon is alive: a file older
than :data:`STALE_AFTER_S` or naming a process that is gone means the daemon is not running.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FILE_NAME = "status.json"
STALE_AFTER_S = 30.0
DEFAULT_DIRS = ("/run/telematics-agent", "/var/lib/telematics-agent")

EXIT_RUNNING = 0
EXIT_NOT_RUNNING = 3  # as `systemctl status` for an inactive unit


def status_path(state_dir: str | Path, environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    runtime = env.get("RUNTIME_DIRECTORY", "")
    # systemd may pass several ':'-separated runtime directories; ours is the first.
    base = Path(runtime.split(":")[0]) if runtime else Path(state_dir)
    return base / FILE_NAME


def write_status(path: Path, status: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(status, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    # No fsync: this file describes the present; after a power cut it is stale anyway.
    os.replace(tmp, path)


def link_status_file(state_dir: str | Path, status_file: Path) -> None:
    """Point ``<state_dir>/status.json`` at a status file kept elsewhere (the runtime dir).

    A technician's shell has no $RUNTIME_DIRECTORY; ``status --config`` finds the state dir
    from the configuration and follows this link. Made once per start: no SD-card wear.
    """
    link = Path(state_dir) / FILE_NAME
    if link == status_file:
        return
    tmp = link.with_name(f".{FILE_NAME}.link")
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(status_file)
        os.replace(tmp, link)
    except OSError:
        pass  # status still works with --status-file


def add_parser(sub: Any) -> None:
    p = sub.add_parser("status", help="what the running daemon is doing now")
    p.add_argument("--config", help="configuration file (finds the state directory)")
    p.add_argument("--status-file", help="read this status file instead")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(func=run)


def _candidates(args: argparse.Namespace) -> list[Path]:
    if args.status_file:
        return [Path(args.status_file)]
    if args.config:
        from agent import config

        cfg = config.load(args.config)
        # Under systemd the file lives in the runtime dir and the state dir holds a link to it.
        return [status_path(cfg.agent.state_dir), Path(cfg.agent.state_dir) / FILE_NAME]
    return [status_path(d) for d in DEFAULT_DIRS]


def read_status(candidates: list[Path]) -> tuple[Path | None, dict[str, Any] | None, str]:
    """The newest readable status among ``candidates``, or why there is none."""
    best: tuple[Path | None, dict[str, Any] | None, str] = (
        None,
        None,
        f"no status file ({', '.join(map(str, candidates))}): is the daemon running?",
    )
    for path in candidates:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            best = (path, None, f"{path}: unreadable status file ({exc})")
            continue
        if not isinstance(doc, dict):
            best = (path, None, f"{path}: status file does not hold a JSON object")
            continue
        if best[1] is None or doc.get("written_unix", 0) > best[1].get("written_unix", 0):
            best = (path, doc, "")
    return best


def liveness(doc: Mapping[str, Any], now_unix: float | None = None) -> tuple[bool, str]:
    now = time.time() if now_unix is None else now_unix
    written = doc.get("written_unix")
    if not isinstance(written, (int, float)):
        return False, "status file has no write time"
    age = now - written
    pid = doc.get("pid")
    if isinstance(pid, int) and pid > 0 and not _pid_alive(pid):
        return False, f"daemon (pid {pid}) is not running; status is {age:.0f} s old"
    if age > STALE_AFTER_S:
        return False, f"status is {age:.0f} s old: the daemon is stuck or gone"
    return True, f"running (pid {pid}), status {max(age, 0.0):.0f} s old"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by the service user
    return True


def render(doc: Mapping[str, Any], verdict: str) -> str:
    lines = [f"telematics-agent {doc.get('version', '?')}: {verdict}"]
    lines.append(f"  device      {doc.get('device_id', '?')}  config {doc.get('config_hash', '?')}")
    lines.append(f"  uptime      {_duration(doc.get('uptime_s'))}")
    mqtt = doc.get("mqtt", {})
    link = "up" if mqtt.get("connected") else f"down ({mqtt.get('last_error') or 'connecting'})"
    lines.append(
        f"  broker      {link}; reconnects {mqtt.get('reconnects', 0)},"
        f" sent {mqtt.get('bytes_sent', 0)} bytes"
    )
    spool = doc.get("spool", {})
    lines.append(f"  spool       {spool.get('depth', '?')} entries waiting")
    gnss = doc.get("gnss", {})
    if gnss:
        age = gnss.get("fix_age_s")
        fix = "no fix yet" if age is None else f"fix {age} s old"
        lines.append(
            f"  gnss        {gnss.get('link', '?')}, {fix}, sats {gnss.get('sats', '?')},"
            f" hdop {gnss.get('hdop', '?')}"
        )
    else:
        lines.append("  gnss        no data")
    obd = doc.get("obd", {})
    lines.append(
        f"  obd         {obd.get('link', 'no data')}"
        + (f", {obd['voltage_v']} V" if "voltage_v" in obd else "")
    )
    ign = doc.get("ignition")
    if ign:
        state = "on" if ign.get("on") else "off (parked)"
        lines.append(f"  ignition    {state} from {ign.get('source', '?')}")
    stages = doc.get("stages", {})
    stalled = [name for name, s in stages.items() if not s.get("ok", True)]
    lines.append(
        "  stages      " + (f"STALLED: {', '.join(stalled)}" if stalled else "all making progress")
    )
    return "\n".join(lines)


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "?"
    s = int(seconds)
    return f"{s // 86400}d {s % 86400 // 3600}h {s % 3600 // 60}m {s % 60}s"


def run(args: argparse.Namespace) -> int:
    path, doc, why = read_status(_candidates(args))
    if doc is None:
        if args.json:
            print(json.dumps({"running": False, "error": why}))
        else:
            print(f"telematics-agent: {why}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    alive, verdict = liveness(doc)
    if args.json:
        print(json.dumps({"running": alive, "verdict": verdict, "file": str(path), **doc}))
    else:
        print(render(doc, verdict))
    return EXIT_RUNNING if alive else EXIT_NOT_RUNNING
