"""The profile: typed values, their validation, and the text form groups and nodes store."""

from __future__ import annotations

import dataclasses

import pytest

from oneroot.errors import InvalidValue
from oneroot.model.profile import (
    BOOL_KEYS,
    DEFAULT_PROFILE,
    LIST_KEYS,
    PROFILE_KEYS,
    BiosLoader,
    Firmware,
    Profile,
    UefiLoader,
    UnionMode,
    check_profile_value,
    split_bmc_address,
    split_host_port,
)


def test_keys_are_the_profile_fields_in_order() -> None:
    assert list(PROFILE_KEYS) == [f.name for f in dataclasses.fields(Profile)]
    assert {"kernel_args", "extra_layers", "check_units", "check_paths",
            "check_commands"} == LIST_KEYS
    assert {"group_layer", "ephemeral"} == BOOL_KEYS
    assert all(PROFILE_KEYS.values())  # every key says what it means (`settings keys`)


def test_defaults_as_text_values() -> None:
    assert DEFAULT_PROFILE == {
        "image": "default", "kernel": "vmlinuz", "initramfs": "initramfs.img", "runlevel": "",
        "kernel_args": (), "extra_layers": (), "group_layer": False, "nfs_options": "",
        "union": "client", "block_top_size": "2G", "bios_loader": "ipxe",
        "uefi_loader": "ipxe", "firmware": "bios",
        "ephemeral": False, "server": "", "layer_quota": "", "bmc_address": "",
        "bmc_protocol": "ipmi",
        "bmc_user": "", "bmc_password_file": "", "bmc_ca_file": "",
        "check_units": (), "check_paths": (), "check_commands": (),
    }
    # the text form holds plain values, not enums (JSON and tables print them as they are)
    assert all(type(v) in (str, bool, tuple) for v in DEFAULT_PROFILE.values())


def test_from_values_types_the_choices() -> None:
    p = Profile.from_values({"union": "server", "bios_loader": "pxelinux",
                             "uefi_loader": "snponly", "firmware": "uefi",
                             "kernel_args": "quiet  console=ttyS0", "ephemeral": "yes"})
    assert p.union is UnionMode.SERVER and p.server_union
    assert p.bios_loader is BiosLoader.PXELINUX
    assert p.uefi_loader is UefiLoader.SNPONLY
    assert p.firmware is Firmware.UEFI
    assert p.kernel_args == ("quiet", "console=ttyS0")
    assert p.ephemeral is True
    assert Profile.from_values(p.as_values()) == p


def test_nfs_option_list() -> None:
    assert Profile(nfs_options="vers=4.2,,hard").nfs_option_list == ("vers=4.2", "hard")
    assert Profile().nfs_option_list == ()


@pytest.mark.parametrize(("key", "value", "message"), [
    ("union", "both", "must be one of client, server"),
    ("bios_loader", "grub", "must be one of ipxe, pxelinux"),
    ("uefi_loader", "pxelinux", "must be one of ipxe, snponly"),
    ("firmware", "coreboot", "must be one of bios, uefi"),
    ("ephemeral", "maybe", "true or false"),
    ("kernel", "../etc/passwd", "inside the boot dir"),
    ("initramfs", "/boot/initrd", "inside the boot dir"),
    ("image", "Bad Name", "invalid image name"),
    ("runlevel", "-x", "invalid runlevel name"),
    ("extra_layers", 7, "must be a list"),
    ("kernel_args", ["a b"], "white space"),
    ("nfs_options", "vers=3 hard", "white space"),
    ("colour", "red", "unknown setting"),
])
def test_bad_values_are_refused(key: str, value: object, message: str) -> None:
    with pytest.raises(InvalidValue, match=message):
        check_profile_value(key, value)
    with pytest.raises(InvalidValue, match=message):  # and resolution refuses them too
        Profile.from_values({key: value})  # type: ignore[dict-item]


def test_lists_from_text() -> None:
    assert check_profile_value("extra_layers", "10.0.0.1:/a, 10.0.0.1:/b,") == (
        "10.0.0.1:/a", "10.0.0.1:/b")
    assert check_profile_value("kernel_args", "a  b") == ("a", "b")
    assert check_profile_value("group_layer", "off") is False


@pytest.mark.parametrize(("text", "expected"), [
    ("10.1.0.11", ("10.1.0.11", 623)), ("bmc01:6230", ("bmc01", 6230)),
    ("[fd00::11]:1623", ("fd00::11", 1623)), ("[fd00::11]", ("fd00::11", 623)),
])
def test_bmc_address(text: str, expected: tuple[str, int]) -> None:
    assert check_profile_value("bmc_address", text) == text
    assert split_host_port(text, default_port=623) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("bmc01", ("", "bmc01", 623)),
    ("https://bmc01", ("https", "bmc01", 443)), ("https://bmc01/", ("https", "bmc01", 443)),
    ("http://127.0.0.1:8000", ("http", "127.0.0.1", 8000)),
    ("https://[fd00::11]:8443", ("https", "fd00::11", 8443)),
])
def test_redfish_bmc_address(text: str, expected: tuple[str, str, int]) -> None:
    assert check_profile_value("bmc_address", text) == text
    assert split_bmc_address(text, default_port=623) == expected


def test_bmc_protocol_is_a_choice() -> None:
    assert check_profile_value("bmc_protocol", "redfish") == "redfish"
    with pytest.raises(InvalidValue, match="ipmi, redfish"):
        check_profile_value("bmc_protocol", "snmp")


@pytest.mark.parametrize("text", ["bmc:0", "bmc:99999", "bmc:x", ":623", "[fd00::1]623",
                                  "ftp://bmc01", "https://", "https://bmc01/redfish/v1",
                                  "https://bmc01:0"])
def test_bad_bmc_address(text: str) -> None:
    with pytest.raises(InvalidValue):
        check_profile_value("bmc_address", text)


@pytest.mark.parametrize("key", ["bmc_password_file", "bmc_ca_file"])
def test_bmc_files_are_absolute(key: str) -> None:
    with pytest.raises(InvalidValue, match="absolute"):
        check_profile_value(key, "pw.txt")
