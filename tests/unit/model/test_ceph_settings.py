"""The settings of nfs_server=ganesha-ceph: parsed from text, bad values refused."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from oneroot.errors import InvalidValue
from oneroot.model import NfsServerKind
from oneroot.model.inventory import settings_from_dict, settings_to_dict


def test_ceph_settings_round_trip() -> None:
    settings = settings_from_dict({"nfs_server": "ganesha-ceph", "cephfs_mount": "/mnt/cephfs",
                                   "ceph_conf": "/etc/ceph/site.conf",
                                   "ceph_user": "oneroot-a", "ceph_fs": "cephfs"})
    assert settings.nfs_server is NfsServerKind.GANESHA_CEPH
    assert settings.nfs_server.is_ganesha and not NfsServerKind.KNFSD.is_ganesha
    assert settings.cephfs_mount == PurePosixPath("/mnt/cephfs")
    assert settings_from_dict(settings_to_dict(settings)) == settings
    assert settings_from_dict({"cephfs_mount": "none"}, settings).cephfs_mount is None


@pytest.mark.parametrize(("key", "value"), [
    ("ceph_user", 'admin";\n}\nEXPORT {'),  # would inject ganesha config
    ("ceph_user", ""),
    ("ceph_fs", "a b"),
    ("cephfs_mount", "relative/dir"),
    ("ceph_conf", "/etc/../x"),
    ("nfs_server", "ceph"),
])
def test_bad_ceph_settings_are_refused(key: str, value: str) -> None:
    with pytest.raises(InvalidValue) as err:
        settings_from_dict({key: value})
    assert key.split("_")[0] in err.value.message or "nfs_server" in err.value.message
