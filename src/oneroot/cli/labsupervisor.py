"""The lab supervisor: the process `oneroot lab up` starts (`python -m
oneroot.cli.labsupervisor`), in a session of its own so the lab outlives the command and the
terminal. It brings the lab up (`oneroot.ops.labctl.bring_up`, either server mode), keeps it
(`labctl.keep_up`) until SIGTERM, SIGINT or SIGHUP, then tears it down (`labctl.tear_down`);
the control file records each phase for `lab status`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from oneroot.errors import LabError
from oneroot.lab.qemu import Firmware
from oneroot.ops import labctl
from oneroot.ops.labcontrol import new_control, read_control, supervisor_alive, write_control

log = logging.getLogger(__name__)

MODULE = "oneroot.cli.labsupervisor"  # run as `python -m MODULE`
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def spawn_supervisor(workdir: Path, *, nodes: int, firmware: Firmware,
                     cache_dir: Path | None = None, server: str = "namespace",
                     servers: int = 1, storage: str = "local") -> int:
    """Start the supervisor (`main()` below) in a session of its own (it survives this
    process and the terminal); returns its PID. Refuses while a lab runs from `workdir`."""
    labctl.check_lab_options(server=server, firmware=firmware, servers=servers,
                             storage=storage)
    ctl = read_control(workdir)
    if ctl is not None and supervisor_alive(ctl):
        raise LabError(f"a lab already runs from {workdir} (supervisor PID "
                       f"{ctl.supervisor_pid}, {ctl.phase})",
                       hint="see `oneroot lab status`, or stop it with `oneroot lab down`")
    if ctl is not None:
        labctl.stop_lab(workdir)  # what a crashed run left behind
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", MODULE, "--workdir", str(workdir),
           "--nodes", str(nodes), "--firmware", firmware, "--server", server,
           "--servers", str(servers), "--storage", storage]
    if cache_dir is not None:
        cmd += ["--cache-dir", str(cache_dir)]
    with (workdir / labctl.SUPERVISOR_LOG).open("ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=workdir)
    log.info("lab.spawn pid=%d workdir=%s nodes=%d server=%s", proc.pid, workdir, nodes,
             server)
    return proc.pid


class _StopRequested(BaseException):
    """SIGTERM/SIGINT/SIGHUP reached the supervisor: tear the lab down."""


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    raise _StopRequested(signal.Signals(signum).name)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    previous = {s: signal.signal(s, _raise_stop) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run_supervisor(workdir: Path, *, nodes: int, firmware: Firmware,
                   cache_dir: Path | None = None, server: str = "namespace",
                   servers: int = 1) -> int:
    """Bring the lab up, keep it until a signal, tear it down. Returns the exit status."""
    workdir.mkdir(parents=True, exist_ok=True)
    ctl = new_control(workdir)
    write_control(ctl)

    def progress(message: str) -> None:
        log.info("lab.progress %s", message)
        ctl.message = message
        write_control(ctl)

    c = labctl.new_lab(workdir, server=server, cache_dir=cache_dir or workdir / "cache",
                       progress=progress, servers=servers)
    status = 0
    with _stop_on_signals():
        try:
            labctl.bring_up(c, ctl, nodes=nodes, firmware=firmware, progress=progress)
            while True:
                time.sleep(labctl.keep_up(c, ctl))
        except _StopRequested as why:
            log.info("lab.stop reason=%s", why)
        except Exception as exc:  # recorded for `lab up`/`lab status`, then torn down
            log.exception("lab.failed")
            labctl.record_failure(ctl, exc)
            status = 1
        finally:
            # A second signal must not interrupt the teardown itself.
            for s in STOP_SIGNALS:
                signal.signal(s, signal.SIG_IGN)
            labctl.tear_down(c, ctl)
    return status


def main(argv: list[str] | None = None) -> int:
    """`python -m oneroot.cli.labsupervisor --workdir DIR --nodes N [--server vm]
    [--servers 2 --storage ceph]`."""
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}")
    parser.add_argument("--workdir", type=Path, default=labctl.DEFAULT_WORKDIR)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--firmware", choices=("bios", "uefi"), default="bios")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--server", choices=labctl.SERVER_MODES, default="namespace")
    parser.add_argument("--servers", type=int, choices=(1, 2), default=1)
    parser.add_argument("--storage", choices=labctl.STORAGE_KINDS, default="local")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    firmware: Firmware = "uefi" if args.firmware == "uefi" else "bios"
    return run_supervisor(args.workdir, nodes=args.nodes, firmware=firmware,
                          cache_dir=args.cache_dir, server=args.server, servers=args.servers)


if __name__ == "__main__":
    sys.exit(main())
