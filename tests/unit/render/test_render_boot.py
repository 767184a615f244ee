"""Per-node boot files: command line, pxelinux, iPXE, GRUB."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest

from oneroot.errors import ConfigError
from oneroot.model import InitSystem
from oneroot.net import MacAddress
from oneroot.render import (
    MAX_CMDLINE,
    DefaultBootContext,
    NodeBootContext,
    grub_filename,
    grub_quote,
    ipxe_filename,
    pxelinux_filename,
    render_cmdline,
    render_grub,
    render_ipxe,
    render_pxelinux,
    render_pxelinux_default,
)
from oneroot.render._env import HEADER, environment
from oneroot.testing.render_example import EXAMPLE_NODES, GoldenCheck

NODES = sorted(EXAMPLE_NODES)
SEED_SPEC = "10.0.0.1:/:ro;10.0.0.1:/var/state/systems/node01;rw"


def append_line(pxelinux: str) -> str:
    (line,) = [ln.strip() for ln in pxelinux.splitlines() if ln.strip().startswith("APPEND ")]
    return line


def test_seed_node_gets_its_root_line_verbatim() -> None:
    node01 = EXAMPLE_NODES["node01"]
    assert pxelinux_filename(node01.macs[0]) == "pxelinux.cfg/01-52-54-00-00-00-01"
    assert f" root={SEED_SPEC} " in append_line(render_pxelinux(node01)) + " "


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        ("node01", f"ip=dhcp root={SEED_SPEC} console=ttyS0,115200 "
                   "oneroot.status=http://10.0.0.1:8080/api/v1/nodes/node01/status"),
        ("node02", "ip=dhcp root=10.0.0.1:/:ro;10.0.0.1:/var/state/groups/compute:ro;"
                   "10.0.0.1:/var/state/systems/node02;rw systemd.unit=computenode.target "
                   "net.ifnames=0 quiet"),
        ("node03", "ip=dhcp root=10.0.0.1:/srv/oneroot/images/gentoo:ro;"
                   "10.0.0.1:/var/state/groups/compute:ro;10.0.0.1:/var/state/systems/node03;rw"
                   " softlevel=computenode"),
        # init system unknown: each init ignores the other's argument.
        ("node04", "ip=dhcp root=10.0.0.1:/:ro;10.0.0.1:/var/state/systems/node04;ro;tmpfs "
                   "softlevel=computenode systemd.unit=computenode.target console=ttyS1,9600"),
        # server-side union: one rw layer, the merged tree the server exports to it.
        ("node05", "ip=dhcp root=10.0.0.1:/var/state/systems/node05/merged:rw"),
    ],
)
def test_cmdline(node: str, expected: str) -> None:
    assert render_cmdline(EXAMPLE_NODES[node]) == expected


def test_cmdline_has_no_bootif_pxelinux_adds_it() -> None:
    node01 = EXAMPLE_NODES["node01"]
    assert "BOOTIF" not in render_cmdline(node01)
    assert "IPAPPEND 2" in render_pxelinux(node01)


def test_no_runlevel_no_runlevel_arg() -> None:
    ctx = dataclasses.replace(EXAMPLE_NODES["node02"], runlevel=None)
    assert "systemd.unit" not in render_cmdline(ctx)
    assert "softlevel" not in render_cmdline(ctx)


@pytest.mark.parametrize("bad", ["", "two words", "tab\there"])
def test_white_space_in_an_argument_is_refused(bad: str) -> None:
    ctx = dataclasses.replace(EXAMPLE_NODES["node01"], kernel_args=(bad,))
    with pytest.raises(ConfigError, match="white space"):
        render_cmdline(ctx)


def test_too_long_a_cmdline_is_refused() -> None:
    long_arg = "x=" + "y" * MAX_CMDLINE
    ctx = dataclasses.replace(EXAMPLE_NODES["node01"], kernel_args=(long_arg,))
    for render in (render_cmdline, render_pxelinux, render_ipxe, render_grub):
        with pytest.raises(ConfigError, match="bytes"):
            render(ctx)


def test_pxelinux_length_counts_what_pxelinux_appends() -> None:
    base = render_cmdline(EXAMPLE_NODES["node02"])
    filler = "x=" + "y" * (MAX_CMDLINE - len(base) - 3)  # fits the bare command line exactly
    ctx = dataclasses.replace(EXAMPLE_NODES["node02"],
                              kernel_args=(*EXAMPLE_NODES["node02"].kernel_args, filler))
    assert len(render_cmdline(ctx)) == MAX_CMDLINE
    with pytest.raises(ConfigError):
        render_pxelinux(ctx)


def test_file_names() -> None:
    mac = MacAddress.parse("AA:BB:CC:DD:EE:0F")
    assert pxelinux_filename(mac) == "pxelinux.cfg/01-aa-bb-cc-dd-ee-0f"
    assert grub_filename(mac) == "grub/grub.cfg-01-aa-bb-cc-dd-ee-0f"
    assert grub_filename(mac, prefix="boot/grub") == "boot/grub/grub.cfg-01-aa-bb-cc-dd-ee-0f"
    assert ipxe_filename("node01") == "node01.ipxe"


def test_pxelinux_serial_is_the_first_directive() -> None:
    lines = [ln for ln in render_pxelinux(EXAMPLE_NODES["node01"]).splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "SERIAL 0 115200"
    assert "SERIAL" not in render_pxelinux(EXAMPLE_NODES["node02"])


def test_pxelinux_default_boots_the_local_disk() -> None:
    text = render_pxelinux_default(DefaultBootContext(timeout_seconds=7))
    assert "DEFAULT local" in text
    assert "LOCALBOOT 0" in text
    assert "TIMEOUT 70" in text
    assert "KERNEL" not in text


def test_ipxe_fetches_over_http_and_retries() -> None:
    text = render_ipxe(EXAMPLE_NODES["node02"])
    assert text.startswith("#!ipxe\n")
    assert ("kernel http://10.0.0.1:8080/boot/debian/vmlinuz-6.1 initrd=initramfs-6.1.img "
            "ip=dhcp root=") in text
    assert "initrd http://10.0.0.1:8080/boot/debian/initramfs-6.1.img || goto failed" in text
    assert "boot || goto failed" in text
    # The retry asks DHCP first: a server that died after sending the script is not asked
    # again for ever; whichever server answers now names its own script (`filename`).
    assert text.endswith("prompt --timeout 10000 && shell ||\n"
                         "echo oneroot: asking DHCP again: if this server is gone, another one "
                         "answers\ndhcp && chain ${filename} ||\ngoto boot\n")


@pytest.mark.parametrize(
    ("arg", "quoted"),
    [
        ("ip=dhcp", "ip=dhcp"),
        ("root=10.0.0.1:/:ro;10.0.0.1:/x;rw", "'root=10.0.0.1:/:ro;10.0.0.1:/x;rw'"),
        ("a$b", "'a$b'"),
        ("it's", "'it'\\''s'"),
    ],
)
def test_grub_quote(arg: str, quoted: str) -> None:
    assert grub_quote(arg) == quoted


def test_grub_quotes_the_root_argument() -> None:
    text = render_grub(EXAMPLE_NODES["node01"])
    assert f"linux /vmlinuz ip=dhcp 'root={SEED_SPEC}' console=ttyS0,115200" in text
    assert "initrd /initramfs.img" in text


@pytest.mark.parametrize("node", NODES)
def test_goldens(node: str, golden: GoldenCheck) -> None:
    ctx = EXAMPLE_NODES[node]
    golden(f"{node}.cmdline", render_cmdline(ctx) + "\n")
    golden(f"{node}.pxelinux.cfg", render_pxelinux(ctx))
    golden(f"{node}.ipxe", render_ipxe(ctx))
    golden(f"{node}.grub.cfg", render_grub(ctx))


def test_golden_pxelinux_default(golden: GoldenCheck) -> None:
    golden("pxelinux-default.cfg", render_pxelinux_default(DefaultBootContext(timeout_seconds=5)))
    serial = DefaultBootContext(timeout_seconds=5, serial=EXAMPLE_NODES["node01"].serial)
    assert render_pxelinux_default(serial).count("SERIAL 0 115200") == 1


@pytest.mark.parametrize("node", NODES)
def test_every_file_says_it_is_generated(node: str) -> None:
    ctx = EXAMPLE_NODES[node]
    for text in (render_pxelinux(ctx), render_grub(ctx)):
        assert text.splitlines()[0] == f"# {HEADER}"
    # `#!ipxe` must be the first line of an iPXE script.
    assert render_ipxe(ctx).splitlines()[1] == f"# {HEADER}"
    assert render_pxelinux_default(DefaultBootContext()).splitlines()[0] == f"# {HEADER}"


def test_templates_are_strict() -> None:
    with pytest.raises(jinja2.UndefinedError):
        environment().get_template("pxelinux.cfg.j2").render(header="x", append="y")


@pytest.mark.skipif(shutil.which("grub-script-check") is None, reason="needs grub-script-check")
@pytest.mark.parametrize("node", NODES)
def test_grub_script_check_accepts(node: str, tmp_path: Path) -> None:
    path = tmp_path / "grub.cfg"
    path.write_text(render_grub(EXAMPLE_NODES[node]))
    result = subprocess.run(["grub-script-check", str(path)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("grub-script-check") is None, reason="needs grub-script-check")
def test_grub_script_check_catches_a_broken_file(tmp_path: Path) -> None:
    """The consumer test is not vacuous: it does reject bad GRUB syntax."""
    path = tmp_path / "grub.cfg"
    path.write_text(render_grub(EXAMPLE_NODES["node01"]).replace("}", "", 1))
    assert subprocess.run(["grub-script-check", str(path)], capture_output=True,
                          check=False).returncode != 0


def test_init_system_values() -> None:
    assert {s.value for s in InitSystem} == {"systemd", "openrc", "unknown"}
    assert isinstance(EXAMPLE_NODES["node01"], NodeBootContext)
