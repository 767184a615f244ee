"""A stand-in for `ganesha.nfsd -F -f CONF -L LOG -p PID` (for supervisor tests).

Listens on 127.0.0.1 at the config's `NFS_Port`; SIGHUP logs "Reread exports complete";
SIGTERM exits 0. A config line `# fake: crash_after=S` makes it exit 3 after S seconds;
`# fake: fail` makes it exit 2 at once with a CRIT line.
"""

import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

argv = [a for a in sys.argv[1:] if a != "-F"]
args = dict(zip(argv[0::2], argv[1::2], strict=False))
conf, log, pid = args["-f"], args["-L"], args["-p"]
text = Path(conf).read_text()


def say(line: str) -> None:
    with open(log, "a") as f:
        f.write(f"date : epoch x : host : fake[main] {line}\n")


if "# fake: fail" in text:
    say("main :CONFIG :CRIT :Config File: bad things")
    sys.exit(2)
port = int(re.search(r"NFS_Port = (\d+);", text).group(1))
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", port))
sock.listen(16)
Path(pid).write_text(f"{os.getpid()}\n")
signal.signal(signal.SIGHUP,
              lambda *_: say("reread_exports :CONFIG :EVENT :Reread exports complete"))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
crash = re.search(r"# fake: crash_after=([\d.]+)", text)
deadline = time.monotonic() + float(crash.group(1)) if crash else None
sock.settimeout(0.05)
while deadline is None or time.monotonic() < deadline:
    try:
        conn, _ = sock.accept()
        conn.close()
    except OSError:
        pass
sys.exit(3)
