"""The CLI end to end on a real SQLite inventory: good input, bad input, nothing written."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from oneroot.cli.main import main
from oneroot.model.checks import MAX_CHECKS, MAX_COMMAND, CheckKind
from oneroot.model.profile import Profile, check_profile_value
from oneroot.nfs import default_nfs_server


def run(home: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["--home", str(home), *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    h = tmp_path / "home"
    assert run(h, "init", "--server", "10.0.0.1", "--image-root", str(tmp_path),
               capsys=capsys)[0] == 0
    assert run(h, "node", "add", "node01", "--mac", "52:54:00:00:00:01", "--ip", "10.0.0.11",
               capsys=capsys)[0] == 0
    return h


def dump(home: Path) -> str:
    conn = sqlite3.connect(home / "inventory.db")
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


BAD = [
    (["node", "add", "node01", "--mac", "52:54:00:00:00:09"], "already exists"),
    (["node", "add", "node02", "--mac", "52:54:00:00:00:01"], "already used by node"),
    (["node", "add", "node02", "--mac", "52:54:00:00:00:02", "--ip", "10.0.0.11"],
     "already used by node"),
    (["node", "add", "node02", "--mac", "52:54:00:00:00:02", "--ip", "10.0.1.11"],
     "outside the subnet"),
    (["node", "add", "node02", "--mac", "52:54:00:00:00:02", "--ip", "10.0.0.1"],
     "server's own address"),
    (["node", "add", "node02", "--mac", "52:54:00:00:00:zz"], "malformed MAC"),
    (["node", "add", "node02", "--mac", "52:54:00:00:00:02", "--group", "gpu"],
     "unknown group 'gpu'"),
    (["node", "add", "node02", "--mac", "52:54:00:00:00:02", "--set", "runlevel=a b"],
     "runlevel"),
    (["node", "add", "n[1-3]", "--mac", "52:54:00:00:01:01", "--mac", "52:54:00:00:01:02",
      "--mac", "52:54:00:00:01:03", "--ip", "10.0.0.253"], "overflow the subnet"),
    (["node", "add", "n[1-2]", "--mac", "52:54:00:00:01:01", "--mac", "52:54:00:00:00:01"],
     "already used by node"),
    (["node", "set", "node01", "--set", "union=sideways"], "union must be one of"),
    (["node", "set", "nodeXX", "--set", "union=server"], "no node named"),
    (["group", "rm", "default"], "is used by node01"),
    (["runlevel", "add", "a b"], "invalid runlevel name"),
    (["node", "add", "Bad_Name!", "--mac", "52:54:00:00:00:02"], "invalid node name"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a[:3]) for a, _ in BAD])
def test_bad_input_is_one_line_and_writes_nothing(
    home: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    before = dump(home)
    code, _, err = run(home, *args, capsys=capsys)
    assert code != 0
    lines = err.strip().splitlines()
    assert lines[0].startswith("error: ") and message in lines[0], err
    assert all(line.startswith(("error: ", "hint: ")) for line in lines), err
    assert "Traceback" not in err
    assert dump(home) == before


def test_range_with_addresses_and_provenance(home: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    macs = home.parent / "macs.txt"
    macs.write_text("# rack 1\n52:54:00:00:02:01\n52-54-00-00-02-02\n5254.0000.0203\n")
    assert run(home, "group", "add", "compute", "--set", "kernel_args=quiet",
               "--set", "initramfs=compute.img", capsys=capsys)[0] == 0
    assert run(home, "group", "add", "gpu", "--set", "initramfs=gpu.img",
               "--set", "kernel_args=nomodeset", capsys=capsys)[0] == 0
    code, _, err = run(home, "node", "add", "c[01-03]", "--macs-file", str(macs),
                       "--ip", "10.0.0.101", "--group", "compute", "--group", "gpu",
                       capsys=capsys)
    assert code == 0, err
    code, out, _ = run(home, "node", "list", "--json", capsys=capsys)
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["c03"]["ip"] == "10.0.0.103"
    assert rows["c02"]["macs"] == ["52:54:00:00:02:02"]
    run(home, "node", "set", "c01", "--set", "kernel=custom/vmlinuz", capsys=capsys)
    code, out, _ = run(home, "node", "show", "c01", "--json", capsys=capsys)
    values = json.loads(out)["values"]
    assert values["initramfs"] == {"value": "gpu.img", "from": "group:gpu"}
    assert values["kernel"] == {"value": "custom/vmlinuz", "from": "node"}
    assert values["kernel_args"] == {"value": ["quiet", "nomodeset"],
                                     "from": "group:compute+group:gpu"}
    assert values["runlevel"]["from"] == "default"


def test_seed_root_line(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(home, "node", "show", "node01", "--json", capsys=capsys)
    assert code == 0
    # The image root here is tmp_path; the seed's own line is checked by the render tests.
    assert json.loads(out)["root"].endswith(";10.0.0.1:/var/state/systems/node01;rw")
    run(home, "node", "set", "node01", "--set", "ephemeral=true", capsys=capsys)
    code, out, _ = run(home, "node", "show", "node01", "--json", capsys=capsys)
    assert json.loads(out)["root"].endswith(";10.0.0.1:/var/state/systems/node01;ro;tmpfs")


def test_export_apply_round_trip_is_idempotent(home: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    run(home, "runlevel", "add", "computenode", "--service", "slurmd", capsys=capsys)
    run(home, "group", "add", "compute", "--set", "runlevel=computenode", capsys=capsys)
    run(home, "node", "set", "node01", "--groups", "default,compute", capsys=capsys)
    code, exported, _ = run(home, "inventory", "export", capsys=capsys)
    assert code == 0
    path = home.parent / "cluster.yaml"
    path.write_text(exported)
    code, out, _ = run(home, "inventory", "apply", str(path), capsys=capsys)
    assert code == 0 and "no changes" in out
    # Edit the file: one node added, one value changed -> exactly two changes, then none.
    edited = exported.replace("nodes:\n", "nodes:\n  node05:\n    mac: [52:54:00:00:00:05]\n"
                              "    ip: 10.0.0.15\n    groups: [default]\n")
    edited = edited.replace("runlevel: computenode", "runlevel: ''")
    path.write_text(edited)
    code, out, _ = run(home, "inventory", "apply", str(path), capsys=capsys)
    assert code == 0 and "+ node node05" in out and "~ group compute" in out
    code, out, _ = run(home, "inventory", "apply", str(path), capsys=capsys)
    assert "no changes" in out


def test_apply_bad_file_changes_nothing(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = dump(home)
    path = home.parent / "bad.yaml"
    for text, message in [
        ("nodes: [oops", "not valid YAML"),
        ("nodes:\n  n1: {mac: [52:54:00:00:00:77], ip: 10.0.0.77, groups: [nope]}\n",
         "unknown group"),
        ("settings: {subnet: 10.0.0.0/24, server_address: 10.0.0.1}\nnodes:\n"
         "  n1: {mac: [52:54:00:00:00:77], ip: 10.9.0.77}\n", "outside the subnet"),
        ("colours: {}\n", "unknown section"),
    ]:
        path.write_text(text)
        code, _, err = run(home, "inventory", "apply", str(path), capsys=capsys)
        assert code != 0 and message in err, err
        assert dump(home) == before


def test_missing_inventory_says_run_init(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(tmp_path / "none", "node", "list", capsys=capsys)
    assert code != 0 and "oneroot init" in err


def test_init_defaults_boot_dir_and_nfs_server(home: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Without --boot-dir/--nfs-server: HOME/boot, and the server the kernel can run."""
    _, out, _ = run(home, "settings", "show", "--json", capsys=capsys)
    settings = json.loads(out)
    assert settings["boot_dir"] == str(home / "boot")
    assert settings["nfs_server"] == str(default_nfs_server())
    other = tmp_path / "other"
    assert run(other, "init", "--image-root", str(tmp_path), "--nfs-server", "knfsd",
               "--boot-dir", str(tmp_path / "b"), capsys=capsys)[0] == 0
    _, out, _ = run(other, "settings", "show", "--json", capsys=capsys)
    assert (json.loads(out)["nfs_server"], json.loads(out)["boot_dir"]) == \
        ("knfsd", str(tmp_path / "b"))


# -- the check keys (check_units, check_paths, check_commands): provenance, YAML, bad values --
COMMAND = 'test "$(cat /etc/hostname)" != localhost, and grep -q a /b'  # a comma, quotes


def test_group_and_node_checks_with_provenance_and_yaml_round_trip(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(home, "group", "set", "default", "--set", "check_units=ssh.service,nfs@x.mount",
               "--set", "check_paths=/usr/bin/true", "--set", f"check_commands={COMMAND}",
               capsys=capsys)[0] == 0
    assert run(home, "node", "set", "node01", "--set",
               'check_commands=["true", "test -d /run"]', capsys=capsys)[0] == 0
    code, out, _ = run(home, "node", "show", "node01", "--json", capsys=capsys)
    values = json.loads(out)["values"]
    assert values["check_units"] == {"value": ["ssh.service", "nfs@x.mount"],
                                     "from": "group:default"}
    assert values["check_paths"] == {"value": ["/usr/bin/true"], "from": "group:default"}
    assert values["check_commands"] == {"value": [COMMAND, "true", "test -d /run"],
                                        "from": "group:default+node"}
    code, out, _ = run(home, "node", "show", "node01", capsys=capsys)
    assert code == 0 and "group:default+node" in out and '"true"' in out  # items quoted

    code, exported, _ = run(home, "inventory", "export", capsys=capsys)
    assert code == 0 and "check_commands:" in exported
    path = home.parent / "cluster.yaml"
    path.write_text(exported)
    before = dump(home)
    code, out, _ = run(home, "inventory", "apply", str(path), capsys=capsys)
    assert code == 0 and "no changes" in out and dump(home) == before


BAD_CHECKS = [
    ("check_units=-H,ssh.service", "is not a unit name", "ssh.service"),
    ("check_units=a b", "is not a unit name", "ssh.service"),
    ("check_paths=relative/path", "is not an absolute path", "/usr/bin/slurmd"),
    ("check_paths=/a b", "is not an absolute path", "check_commands"),
    ("check_commands=true\x1b[2J", "control character", "printable"),
    ("check_commands=[\"true\", 3]", "must be a list of text", "check_commands"),
    ("check_commands=[\"true\"", "is not a JSON list", "e.g."),
    ("check_commands=" + "x" * (MAX_COMMAND + 1), f"more than {MAX_COMMAND}", "script"),
    ("check_paths=" + ",".join(f"/p{i}" for i in range(MAX_CHECKS + 1)),
     f"more than {MAX_CHECKS}", "fold"),
]


@pytest.mark.parametrize(("pair", "message", "hint"), BAD_CHECKS,
                         ids=[b[1] for b in BAD_CHECKS])
def test_a_bad_check_is_one_error_with_a_hint_and_writes_nothing(
        home: Path, capsys: pytest.CaptureFixture[str], pair: str, message: str,
        hint: str) -> None:
    before = dump(home)
    code, _, err = run(home, "group", "set", "default", "--set", pair, capsys=capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 2, err
    assert lines[0].startswith("error: ") and message in lines[0], err
    assert lines[1].startswith("hint: ") and hint in lines[1], err
    assert dump(home) == before


def test_checks_are_numbered_units_paths_commands() -> None:
    p = Profile.from_values({"check_commands": ("false",), "check_units": "a.service",
                             "check_paths": ("/x",)})
    assert [(c.kind, c.target) for c in p.checks] == [
        (CheckKind.UNIT, "a.service"), (CheckKind.PATH, "/x"), (CheckKind.COMMAND, "false")]
    assert check_profile_value("check_commands", "") == ()
    assert check_profile_value("check_commands", "a, b") == ("a, b",)  # one command



def test_checks_of_groups_together_over_the_limit_are_refused_by_the_command(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each group may hold MAX_CHECKS checks of a kind, and a node runs its groups' together:
    the command that would pass the limit for some node is refused (naming the nodes and where
    their checks come from), not the node's next render."""
    half = MAX_CHECKS // 2 + 1

    def paths(prefix: str) -> str:
        return "check_paths=" + ",".join(f"/{prefix}{i}" for i in range(half))

    for args in (["group", "add", "a", "--set", paths("a")], ["group", "add", "b"],
                 ["group", "add", "c", "--set", paths("c")],
                 ["node", "set", "node01", "--groups", "a,b"],
                 ["node", "add", "node02", "--mac", "52:54:00:00:00:02", "--group", "a",
                  "--group", "b"]):
        assert run(home, *args, capsys=capsys)[0] == 0, args
    total = f"would run {2 * half} check_paths"
    for args, message in [
        (["group", "set", "b", "--set", paths("b")],
         f"nodes node01, node02 {total} ({half} from group a + {half} from group b), more "
         f"than {MAX_CHECKS}"),
        (["node", "set", "node01", "--groups", "a,c"],
         f"node node01 {total} ({half} from group a + {half} from group c), more than "
         f"{MAX_CHECKS}"),
        (["node", "set", "node02", "--set", paths("n")],
         f"node node02 {total} ({half} from group a + {half} from its own)"),
        (["node", "add", "node03", "--mac", "52:54:00:00:00:03", "--group", "c", "--set",
          paths("n")], f"node node03 {total} ({half} from group c + {half} from its own)"),
    ]:
        before = dump(home)
        code, _, err = run(home, *args, capsys=capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 2, err
        assert lines[0].startswith(f"error: {message}"), err
        assert lines[1].startswith("hint: a node runs at most"), err
        assert dump(home) == before
    code, out, _ = run(home, "node", "show", "node01", capsys=capsys)
    assert code == 0 and "/a0" in out
