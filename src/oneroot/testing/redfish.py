"""A Redfish BMC for tests: sushy-tools' emulator (`sushy_tools.emulator.main`) as a real
process on loopback, with its fake driver (one ComputerSystem, no libvirt) behind HTTP basic
auth (a bcrypt htpasswd file).

The emulator runs unmodified but for two things its runner (`_RUNNER`) adds: each request
that passed authentication is appended to `requests.jsonl` (method, path, JSON body), so a
test reads what the BMC was asked to do; and the fake driver's delay before a power change
takes effect is 1 s instead of a random 1-11 s, to keep CI time low (the change is still
asynchronous, as on real BMCs). A test checks the emulator's state with plain HTTP
(`system()`), not through the client under test.

    with RedfishEmulator(tmp_path / "rf", user="admin", password="s3cret") as bmc:
        ... bmc.address ("http://127.0.0.1:PORT"), bmc.system()["PowerState"], bmc.requests()

With `tls=True` it serves HTTPS with a self-signed certificate for 127.0.0.1 (`bmc.ca_file`).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from oneroot.lab.netns import terminate_process
from oneroot.testing.ports import free_port

SYSTEM_ID = "27946b59-9e44-4fa7-8e91-f3527a1ef094"  # the fake driver's default system

_RUNNER = """
import json, sys
from types import SimpleNamespace
import flask
from sushy_tools.emulator import main
from sushy_tools.emulator.resources.systems import fakedriver

log_path = sys.argv.pop(1)
fakedriver.random = SimpleNamespace(randint=lambda low, high: low)

@main.app.before_request
def record():
    body = flask.request.get_json(silent=True)
    with open(log_path, "a") as log:
        log.write(json.dumps({"method": flask.request.method,
                              "path": flask.request.path, "json": body}) + "\\n")

sys.exit(main.main())
"""

_CONFIG = """
SUSHY_EMULATOR_LISTEN_IP = "127.0.0.1"
SUSHY_EMULATOR_LISTEN_PORT = {port}
SUSHY_EMULATOR_AUTH_FILE = {auth!r}
SUSHY_EMULATOR_STATE_DIR = {state!r}
SUSHY_EMULATOR_FAKE_DRIVER = True
{tls}
SUSHY_EMULATOR_FAKE_SYSTEMS = [{{
    "uuid": {uuid!r}, "name": "node", "power_state": {power!r},
    "external_notifier": False,
    "nics": [{{"mac": "52:54:00:00:02:01", "ip": "10.0.0.31"}}],
}}]
"""


class RedfishEmulator:
    def __init__(self, workdir: Path, *, user: str, password: str,
                 powered: bool = False, tls: bool = False) -> None:
        self.dir = workdir
        self.tls = tls
        self.user = user
        self.password = password
        self.port = free_port()
        self._powered = powered
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The self-signed certificate (`tls=True`): its own CA."""
        return self.dir / "cert.pem"

    def _context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=str(self.ca_file)) if self.tls else None

    def get(self, path: str) -> dict[str, Any]:
        """GET `path` with the right credentials, by plain HTTP (not sushy)."""
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request = urllib.request.Request(f"{self.address}{path}",
                                         headers={"Authorization": f"Basic {token}"})
        with urllib.request.urlopen(request, timeout=10, context=self._context()) as reply:
            doc: dict[str, Any] = json.load(reply)
        return doc

    def system(self) -> dict[str, Any]:
        return self.get(f"/redfish/v1/Systems/{SYSTEM_ID}")

    def wait_power(self, state: str, *, timeout: float = 15) -> str:
        """The system's PowerState once it is `state` (the fake driver applies changes late),
        or whatever it is at the timeout."""
        deadline = time.monotonic() + timeout
        now = self.system()["PowerState"]
        while now != state and time.monotonic() < deadline:
            time.sleep(0.2)
            now = self.system()["PowerState"]
        return str(now)

    def requests(self) -> list[dict[str, Any]]:
        """Every request that passed authentication, in order."""
        path = self.dir / "requests.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] \
            if path.exists() else []

    def changes(self) -> list[dict[str, Any]]:
        """The requests that asked for a change (everything but GET)."""
        return [r for r in self.requests() if r["method"] != "GET"]

    def __enter__(self) -> RedfishEmulator:
        import bcrypt  # sushy-tools' own dependency, as its auth file needs

        self.dir.mkdir(parents=True, exist_ok=True)
        digest = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=4)).decode()
        (self.dir / "htpasswd").write_text(f"{self.user}:{digest}\n")
        tls = ""
        if self.tls:
            self_signed_certificate(self.ca_file, self.dir / "key.pem")
            tls = (f"SUSHY_EMULATOR_SSL_CERT = {str(self.ca_file)!r}\n"
                   f"SUSHY_EMULATOR_SSL_KEY = {str(self.dir / 'key.pem')!r}")
        (self.dir / "emulator.conf").write_text(_CONFIG.format(
            port=self.port, auth=str(self.dir / "htpasswd"), state=str(self.dir / "state"),
            uuid=SYSTEM_ID, power="On" if self._powered else "Off", tls=tls))
        log = (self.dir / "emulator.log").open("wb")
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _RUNNER, str(self.dir / "requests.jsonl"),
             "--config", str(self.dir / "emulator.conf"), "--fake"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self._wait_serving()
        return self

    def _wait_serving(self) -> None:
        deadline = time.monotonic() + 120  # 3-4 s at a load of 9 on two cores: a bound
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError("sushy-emulator exited: "
                                   f"{(self.dir / 'emulator.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.address}/redfish/v1/", timeout=2,
                                            context=self._context()):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise RuntimeError(f"sushy-emulator did not serve {self.address}")

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._proc is not None:
            terminate_process(self._proc.pid, None, timeout=5, popen=self._proc)
            self._proc = None


def self_signed_certificate(cert: Path, key: Path) -> None:
    """A certificate for 127.0.0.1, signed by its own key, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "oneroot test BMC")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(private.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256()))
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    key.chmod(0o600)
