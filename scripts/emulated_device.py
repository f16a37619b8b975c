#!/usr/bin/env python3
"""Start/stop/query a detached emulated aarch64 "Snapdragon" (RPC tracker + qemu'd TVM RPC server).

    python scripts/emulated_device.py start [--workdir D] [--port P] [--key K]   # prints --rpc-tracker/--rpc-key
    python scripts/emulated_device.py status [--workdir D]
    python scripts/emulated_device.py stop [--workdir D]

The pids/ports live in ``--state`` (default ``<workdir>/cli-state.json``) so that ``stop`` works from another
shell; ``stop`` signals only processes this script started (pid and start time both match). Workdir defaults to
``$TVM_ECNN_EMU_DIR`` or ``~/.cache/tvm-ecnn/emu``. See ``tvm_ecnn.device.emulated``.
A ``--port`` something already listens on is refused (exit 1); a bad ``--port`` or state file exits with 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from any cwd without installing the package

from tvm_ecnn.device import emulated  # noqa: E402


def _state_file(args) -> Path:
    if args.state:
        return Path(args.state).expanduser().resolve()
    return Path(args.workdir or emulated.default_workdir()).expanduser().resolve() / "cli-state.json"


class BadStateFile(ValueError):
    """A state file ``start`` did not write: no process is signalled on its word."""


_STATE_KEYS = ("host", "port", "key", "tracker", "device")


def _load(args) -> tuple[dict, list[emulated.Service]] | tuple[None, list]:
    """The state ``start`` wrote, or (None, []) when there is none."""
    path = _state_file(args)
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None, []
    except (OSError, ValueError) as error:
        raise BadStateFile(f"cannot read state file {path}: {error}") from error
    missing = [k for k in _STATE_KEYS if k not in state] if isinstance(state, dict) else list(_STATE_KEYS)
    services = []
    if not missing:
        try:
            services = [emulated.Service(**state[name]) for name in ("device", "tracker")]
        except TypeError as error:  # a service's fields missing or unknown
            missing = [f"service fields ({error})"]
    if missing:
        raise BadStateFile(f"state file {path} is not one `start` wrote (missing {', '.join(missing)}); nothing "
                           "was signalled: look for leftovers with `ps -eo pid,pgid,args | grep tvm.exec`, "
                           "then delete the file")
    return state, services


def cmd_start(args) -> int:
    state, services = _load(args)
    if any(s.alive() for s in services):
        print(f"already running: --rpc-tracker {state['host']}:{state['port']} --rpc-key {state['key']} "
              f"(run `stop` first)", file=sys.stderr)
        return 1
    try:
        tracker = emulated.start_tracker(args.host, args.port, args.workdir)
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        device = emulated.start_device(args.workdir, f"{args.host}:{tracker.port}", args.key)
    except BaseException:
        emulated.stop(tracker)
        raise
    state = {"host": args.host, "port": tracker.port, "key": args.key,
             "tracker": tracker.to_json(), "device": device.to_json()}
    path = _state_file(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=1))
    print(f"tracker pid {tracker.pid} log {tracker.log}\ndevice pid {device.pid} log {device.log}\nstate {path}")
    print(f"--rpc-tracker {args.host}:{tracker.port} --rpc-key {args.key}")
    return 0


def cmd_stop(args) -> int:
    _, services = _load(args)
    for s in services:
        if not s.owns_group():
            print(f"{s.name} (pid {s.pid}) ended long ago and its pid now belongs to another process: left alone")
    emulated.stop(*services)
    _state_file(args).unlink(missing_ok=True)
    print("stopped" if services else "nothing to stop")
    return 0


def cmd_status(args) -> int:
    state, services = _load(args)
    if not services or not all(s.alive() for s in services):
        print("not running" + (" (stale state: run `stop`)" if services else ""))
        return 1
    from tvm import rpc

    print(rpc.connect_tracker(state["host"], state["port"]).text_summary())
    print(f"--rpc-tracker {state['host']}:{state['port']} --rpc-key {state['key']}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func in (("start", cmd_start), ("stop", cmd_stop), ("status", cmd_status)):
        p = sub.add_parser(name)
        p.add_argument("--workdir", default=None, help="sysroot and log folder "
                       "(default: $TVM_ECNN_EMU_DIR or ~/.cache/tvm-ecnn/emu)")
        p.add_argument("--state", default=None, help="state file (default: <workdir>/cli-state.json)")
        p.set_defaults(func=func)
    start = sub.choices["start"]
    start.add_argument("--port", type=int, default=None, help="tracker port (default: a free one)")
    start.add_argument("--key", default=emulated.DEFAULT_KEY, help="device key (default: %(default)s)")
    start.add_argument("--host", default="127.0.0.1", help="tracker/server host (default: %(default)s)")
    args = parser.parse_args(argv)
    if getattr(args, "port", None) is not None and not 1 <= args.port <= 65535:
        print(f"error: --port must be a TCP port (1-65535), got {args.port}", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except BadStateFile as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
