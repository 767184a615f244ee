"""What the kernel loads to run the image's init (the ELF interpreter, PT_INTERP, or a script's
`#!` program) is followed inside the new root before switch_root, under a private busybox sh
in dry-run mode (`oneroot.testing.initsh`): a missing one fails the stage, not the kernel."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from oneroot.initramfs.busybox import parse_elf, read_elf
from oneroot.testing.initsh import commands, run_init, sh

STATUS = "oneroot.status=http://10.0.0.1:8080/api/v1/report"
LD_SO = "/lib64/ld-linux-x86-64.so.2"


def elf(bits: int, order: str, interp: str | None) -> bytes:
    """A minimal ELF: a header, a PT_LOAD and (with `interp`) a PT_INTERP, then its text."""
    end = "<" if order == "le" else ">"
    ehsize, phentsize = (64, 56) if bits == 64 else (52, 32)
    text = interp.encode() + b"\0" if interp else b""
    at = ehsize + 2 * phentsize
    ident = b"\x7fELF" + bytes((bits // 32, 1 if order == "le" else 2, 1)) + bytes(9)
    head = struct.pack(end + ("HHIQQQIHHHHHH" if bits == 64 else "HHIIIIIHHHHHH"),
                       2, 62, 1, 0, ehsize, 0, 0, ehsize, phentsize, 2 if interp else 1, 0, 0, 0)
    if bits == 64:
        load, interp_ph = (struct.pack(end + "IIQQQQQQ", 1, 5, 0, 0, 0, at, at, 4096),
                           struct.pack(end + "IIQQQQQQ", 3, 4, at, at, at, len(text), len(text), 1))
    else:
        load, interp_ph = (struct.pack(end + "IIIIIIII", 1, 0, 0, 0, at, at, 5, 4096),
                           struct.pack(end + "IIIIIIII", 3, at, at, at, len(text), len(text), 4, 1))
    return ident + head + load + (interp_ph + text if interp else b"")


INTERPRETERS = {
    **{f"elf{bits}{order}": (elf(bits, order, "/lib/ld.so.1"), "elf /lib/ld.so.1")
       for bits in (64, 32) for order in ("le", "be")},
    "host": (Path("/bin/true").read_bytes(), f"elf {read_elf(Path('/bin/true')).interpreter}"),
    "static": (elf(64, "le", None), ""),
    "cut_short": (elf(64, "le", LD_SO)[:100], ""),  # the kernel's ENOEXEC, not ours to say
    "script": (b"#!  /bin/sh -e\necho hi\n", "script /bin/sh"),
    "env": (b"#!/usr/bin/env python3\n", "script /usr/bin/env"),
    "magic_only": (b"\x7fELF", ""),
    "text": (b"plain text\n", ""),
}


@pytest.mark.parametrize(("content", "says"), INTERPRETERS.values(), ids=INTERPRETERS.keys())
def test_the_interpreter_is_read_as_the_kernel_reads_it(node: Path, bbdir: Path, content: bytes,
                                                         says: str) -> None:
    if says.startswith("elf") or content == INTERPRETERS["static"][0]:  # builder, real
        assert parse_elf(content).interpreter == (says.split()[1] if says else None)
    (node / "prog").write_bytes(content)
    r = sh(node, bbdir, "switchroot_interp @/prog".replace("@", str(node)))
    assert (r.returncode, r.stdout.strip()) == (0, says), r.stderr


def _interpreters(sysroot: Path, change: str) -> None:
    """The fixture's systemd becomes a dynamic ELF (or a script); `change` breaks its chain."""
    systemd = sysroot / "usr/lib/systemd/systemd"
    if change.startswith("script"):
        systemd.write_bytes(b"#!/usr/bin/bash\nexec /usr/lib/systemd/real\n")
        prog = sysroot / "usr/bin/bash"
        prog.parent.mkdir()
    else:
        prog = systemd
    prog.write_bytes(elf(64, "le", LD_SO))
    prog.chmod(0o755)
    (sysroot / "usr/lib64").mkdir()
    if change not in ("no_lib64", "script_no_bash"):
        (sysroot / "lib64").symlink_to("usr/lib64")
    if change not in ("no_loader", "script_no_loader"):
        (sysroot / "usr/lib64" / Path(LD_SO).name).write_bytes(b"\x7fELF")
        (sysroot / "usr/lib64" / Path(LD_SO).name).chmod(0o644 if change == "no_x" else 0o755)
    if change == "script_no_bash":
        prog.unlink()


SYSTEMD = "the root's init /sbin/init leads to /usr/lib/systemd/systemd, whose "
LOADER = f"ELF interpreter {LD_SO} "


@pytest.mark.parametrize(("change", "why"), [
    ("no_lib64", f"{SYSTEMD}{LOADER}does not resolve: {LD_SO}: /lib64 is missing"),
    ("no_loader", f"{SYSTEMD}{LOADER}does not resolve: {LD_SO} -> /usr{LD_SO}: /usr{LD_SO} is "
                  "missing"),
    ("no_x", f"{SYSTEMD}{LOADER}leads to /usr{LD_SO}, which is not an executable file"),
    ("script_no_bash", f"{SYSTEMD}#! interpreter /usr/bin/bash does not resolve: "
                       "/usr/bin/bash: /usr/bin/bash is missing"),
    ("script_no_loader", f"{SYSTEMD}#! interpreter /usr/bin/bash, whose {LOADER}does not "
                         f"resolve: {LD_SO} -> /usr{LD_SO}: /usr{LD_SO} is missing"),
])
def test_init_whose_interpreter_is_missing_fails_the_stage(node: Path, bbdir: Path, change: str,
                                                            why: str) -> None:
    """The kernel loads PT_INTERP (or the #! program) from the new root after switch_root: a
    missing one panicked the node ("can't execute '/sbin/init'") with init itself in place."""
    _interpreters(node / "sysroot", change)
    failed = _stage_fails(node, bbdir)
    assert failed.line == f"oneroot: stage switch_root failed: {why}"
    assert "(for the ELF interpreter: its C library, libc6)" in failed.fix


@pytest.mark.parametrize("change", ["elf", "script"])
def test_init_whose_interpreters_are_there_switches_root(node: Path, bbdir: Path,
                                                         change: str) -> None:
    _interpreters(node / "sysroot", change)
    _switches_root(node, bbdir)


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    line: str  # the stage's failure line on the console
    fix: str  # the line after it


def _stage_fails(node: Path, bbdir: Path) -> Failure:
    """/init stops at the switch_root stage (reported, no switch_root run): its line."""
    r = run_init(node, bbdir, f"root=10.0.0.1:/srv/img:ro;tmpfs {STATUS}")
    assert r.returncode == 1, r.stderr
    assert not [c for c in commands(r.stdout) if "switch_root @" in c]
    assert "stage=failed&status=failed&message=switch_root" in commands(r.stdout)[-1]
    lines = r.stderr.splitlines()
    [at] = [i for i, line in enumerate(lines) if "stage switch_root failed" in line]
    return Failure(line=lines[at], fix=lines[at + 1])


def _switches_root(node: Path, bbdir: Path) -> None:
    r = run_init(node, bbdir, "root=10.0.0.1:/srv/img:ro;tmpfs")
    assert r.returncode == 0, r.stderr
    assert commands(r.stdout)[-1] == "exec switch_root @/sysroot /sbin/init"


# -- the shared libraries init's loader loads (DT_NEEDED) -----------------------------------

LOADER_SAYS = {
    "glibc": ("/sbin/init: error while loading shared libraries: libc.so.6: cannot open shared "
              "object file: No such file or directory",
              "libc.so.6: cannot open shared object file: No such file or directory"),
    "ldd": ("\tlinux-vdso.so.1 (0x00007ffd)\n\tlibfoo.so.1 => not found\n"
            "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x7f00)", "libfoo.so.1: not found"),
    "musl": ("Error loading shared library libfoo.so.1: No such file or directory (needed by "
             "/sbin/init)", "libfoo.so.1: No such file or directory (needed by /sbin/init)"),
    "all_found": ("\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x7f00)\n"
                  "\t/lib64/ld-linux-x86-64.so.2 (0x7f01)", ""),
    "cannot_run": ("chroot: can't execute '/lib64/ld-linux-x86-64.so.2': Exec format error", ""),
    "nothing": ("", ""),
}


@pytest.mark.parametrize(("text", "says"), LOADER_SAYS.values(), ids=LOADER_SAYS.keys())
def test_what_a_loader_says_about_a_missing_library_is_read(node: Path, bbdir: Path, text: str,
                                                            says: str) -> None:
    (node / "said").write_text(text)
    r = sh(node, bbdir, f'switchroot_missing_library "$(cat {node / "said"})"')
    assert (r.returncode, r.stdout.strip()) == (1 if says else 0, says), r.stderr


def _real_init(sysroot: Path, change: str) -> None:
    """The fixture's systemd becomes this host's /bin/true (or a script run by it), with this
    host's loader at its PT_INTERP path; `change` says what becomes of its C library."""
    true = Path("/bin/true")
    loader = read_elf(true).interpreter
    assert loader is not None
    systemd = sysroot / "usr/lib/systemd/systemd"
    prog = sysroot / "usr/bin/bash" if change.startswith("script") else systemd
    prog.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(true, prog)
    if prog != systemd:
        systemd.write_bytes(b"#!/usr/bin/bash\nexec /usr/lib/systemd/real\n")
    (sysroot / loader.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(os.path.realpath(loader), sysroot / loader.lstrip("/"))
    listed = subprocess.run(["ldd", str(true)], capture_output=True, text=True, check=True)
    for name, path in re.findall(r"^\s*(\S+) => (/\S+)", listed.stdout, re.M):
        lib = sysroot / path.lstrip("/")
        lib.parent.mkdir(parents=True, exist_ok=True)
        if change.endswith("broken"):
            lib.write_text("not a library\n")
        elif not change.endswith("missing"):
            shutil.copy(os.path.realpath(path), lib)
        assert name == "libc.so.6"  # /bin/true needs nothing else


ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="the image's loader runs under chroot")
BY = "the root's init /sbin/init leads to /usr/lib/systemd/systemd, whose "
LOADS = f"ELF interpreter {LD_SO}, which cannot load a shared library of"


@ROOT
@pytest.mark.parametrize(("change", "why"), [
    ("libc_missing", f"{BY}{LOADS} /usr/lib/systemd/systemd: libc.so.6: cannot open shared "
                     "object file: No such file or directory"),
    ("libc_broken", f"{BY}{LOADS} /usr/lib/systemd/systemd: /"),  # its path: file too short
    ("script_libc_missing", f"{BY}#! interpreter /usr/bin/bash, whose {LOADS} /usr/bin/bash: "
                            "libc.so.6: cannot open shared object file"),
])
def test_init_whose_libraries_are_missing_fails_the_stage(node: Path, bbdir: Path, change: str,
                                                          why: str) -> None:
    """With the loader in place and libc missing, init exited 127 after switch_root and the
    kernel panicked ("Attempted to kill init"); the image's loader names the library now."""
    _real_init(node / "sysroot", change)
    failed = _stage_fails(node, bbdir)
    assert failed.line.startswith(f"oneroot: stage switch_root failed: {why}"), failed
    assert "libc.so.6" in failed.line and "the image lacks that library" in failed.fix


@ROOT
@pytest.mark.parametrize("change", ["elf", "script"])
def test_init_whose_libraries_are_there_switches_root(node: Path, bbdir: Path,
                                                      change: str) -> None:
    _real_init(node / "sysroot", change)
    _switches_root(node, bbdir)
