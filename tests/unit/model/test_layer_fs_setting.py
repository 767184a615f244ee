"""The `layer_fs` setting: own (the default) or shared, and where it applies."""

from __future__ import annotations

import pytest

from oneroot.errors import InvalidValue
from oneroot.model import LayerFs, NfsServerKind, Settings
from oneroot.model.inventory import settings_from_dict, settings_to_dict


def test_own_is_the_default_and_applies_to_ganesha_vfs_only() -> None:
    settings = Settings()
    assert settings.layer_fs is LayerFs.OWN
    assert LayerFs.OWN.applies(NfsServerKind.GANESHA)
    assert not LayerFs.OWN.applies(NfsServerKind.KNFSD)  # subtree_check
    assert not LayerFs.OWN.applies(NfsServerKind.GANESHA_CEPH)  # CephFS, cephx per export
    assert not LayerFs.SHARED.applies(NfsServerKind.GANESHA)
    shared = settings_from_dict({"layer_fs": "shared"})
    assert shared.layer_fs is LayerFs.SHARED
    assert settings_from_dict(settings_to_dict(shared)) == shared


def test_a_bad_value_is_refused_with_a_hint() -> None:
    with pytest.raises(InvalidValue) as err:
        settings_from_dict({"layer_fs": "private"})
    assert "layer_fs must be own or shared" in err.value.message and err.value.hint
