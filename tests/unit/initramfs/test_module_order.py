"""Initramfs module order comes from `depends` in module.toml (not from the number), and /init
takes both its stage list and that order from generated.sh, written from the Python lists."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from oneroot.errors import BuildError
from oneroot.initramfs.builder import (
    GENERATED_SH,
    MODULES_ROOT,
    InitramfsModule,
    load_modules,
    write_script_tree,
)
from oneroot.model.events import INITRAMFS_STAGES, REPORTED_STAGES

BUSYBOX = shutil.which("busybox") or "/bin/busybox"


def _module(root: Path, name: str, depends: list[str], lib: str = "", hook: str = "") -> None:
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "module.toml").write_text(f"depends = {depends!r}\n".replace("'", '"'))
    if lib:
        (directory / "lib.sh").write_text(lib)
    if hook:
        (directory / "hooks").mkdir()
        (directory / "hooks" / "modules.sh").write_text(hook)


def test_depends_orders_modules_before_names_do(tmp_path: Path) -> None:
    _module(tmp_path, "10-late", ["20-early"])
    _module(tmp_path, "20-early", [])
    _module(tmp_path, "30-free", [])
    assert [m.name for m in load_modules(tmp_path)] == ["20-early", "10-late", "30-free"]


def test_a_missing_dependency_is_a_build_error(tmp_path: Path) -> None:
    _module(tmp_path, "10-a", ["05-gone"])
    with pytest.raises(BuildError, match="10-a depends on 05-gone, which is not a module"):
        load_modules(tmp_path)


def test_a_cycle_is_a_build_error(tmp_path: Path) -> None:
    _module(tmp_path, "10-a", ["20-b"])
    _module(tmp_path, "20-b", ["10-a"])
    _module(tmp_path, "30-c", [])
    with pytest.raises(BuildError, match="in a cycle: 10-a, 20-b"):
        load_modules(tmp_path)


def _defined(m: InitramfsModule) -> set[str]:
    text = (m.directory / "lib.sh").read_text() if m.has_lib else ""
    return set(re.findall(r"^([a-z_]+)\(\)", text, re.MULTILINE))


def _closure(m: InitramfsModule, by_name: dict[str, InitramfsModule]) -> set[str]:
    seen: set[str] = set()
    todo = list(m.depends)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += by_name[name].depends
    return seen


def test_a_module_replacing_a_function_depends_on_its_first_definer() -> None:
    """90-report's `oneroot_report` replaces 00-base's because it is sourced later: the
    module declares that (depends), it does not hang on its number."""
    modules = load_modules()
    by_name = {m.name: m for m in modules}
    replaced = []
    for i, later in enumerate(modules):
        for earlier in modules[:i]:
            for function in _defined(later) & _defined(earlier):
                replaced.append(function)
                assert earlier.name in _closure(later, by_name), (
                    f"{later.name} redefines {function} of {earlier.name}: add depends")
    assert "oneroot_report" in replaced
    assert all("00-base" in _closure(m, by_name) for m in modules if m.name != "00-base")


def test_generated_sh_carries_the_python_stages_and_the_order(tmp_path: Path) -> None:
    write_script_tree(tmp_path)
    script = f'. "{tmp_path / GENERATED_SH}"; echo "$ONEROOT_STAGES"; echo "$ONEROOT_MODULES"'
    out = subprocess.run([BUSYBOX, "sh", "-c", script], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == [" ".join(INITRAMFS_STAGES), " ".join(m.name for m in load_modules())]


def test_init_sources_libraries_and_runs_hooks_in_depends_order(tmp_path: Path) -> None:
    """10-b depends on 20-a: /init sources 20-a's library first (10-b's `who` wins) and runs
    20-a's hook first, where name order would do both the other way round."""
    root = tmp_path / "modules"
    shutil.copytree(MODULES_ROOT / "00-base", root / "00-base")
    for name, depends in (("10-b", ["00-base", "20-a"]), ("20-a", ["00-base"])):
        _module(root, name, depends, lib=f"who() {{ echo {name}; }}\n",
                hook=f'echo "hook {name} sees $(who)" >>"$ONEROOT_RUN/order"\n')
    write_script_tree(tmp_path / "tree", load_modules(root))
    (tmp_path / "run").mkdir()
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "ONEROOT_DRYRUN": "1",
           "ONEROOT_LIB": str(tmp_path / "tree/lib/oneroot"), "ONEROOT_RUN": str(tmp_path / "run"),
           "ONEROOT_CMDLINE": "ip=off"}
    result = subprocess.run([BUSYBOX, "sh", str(tmp_path / "tree/init")], env=env,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run/order").read_text().splitlines() == [
        "hook 20-a sees 10-b", "hook 10-b sees 10-b"]


def test_the_shell_reports_only_stages_the_server_accepts() -> None:
    scripts = [p for p in MODULES_ROOT.rglob("*") if p.is_file() and p.suffix in ("", ".sh")]
    reported = {stage for p in scripts
                for stage in re.findall(r"oneroot_report ([a-z_]+) ", p.read_text())}
    case = re.search(r"^\t\t\t([a-z_ |]+)\) oneroot_report \"\$1\" ok",
                     (MODULES_ROOT / "00-base/lib.sh").read_text(), re.MULTILINE)
    assert case is not None
    reported |= {s.strip() for s in case.group(1).split("|")}
    # `init` and `runlevel` come from the booted image
    assert reported == set(REPORTED_STAGES) - {"init", "runlevel"}
