"""The boot catalog over one resolved cluster: lookups, and caches that die with it."""

from __future__ import annotations

import gc
import weakref

from oneroot.model import resolve_cluster
from oneroot.net import MacAddress
from oneroot.ops.catalog import BootCatalog
from oneroot.render.boot import ipxe_filename, pxelinux_filename
from oneroot.testing.inventory import make_inventory, make_node

MAC1 = MacAddress.parse("52:54:00:00:00:01")
MAC2 = MacAddress.parse("52:54:00:00:00:02")


def _catalog() -> BootCatalog:
    inv = make_inventory(nodes=[make_node(1), make_node(2, bios_loader="pxelinux",
                                                        uefi_loader="snponly")])
    return BootCatalog(resolve_cluster(inv))


def test_dhcp_lookup_names_the_loaders_files() -> None:
    catalog = _catalog()
    one, two = catalog.dhcp_lookup(MAC1), catalog.dhcp_lookup(MAC2)
    assert one is not None and two is not None
    assert (one.bios_file, one.uefi_file, one.bios_pxelinux) == (
        "undionly.kpxe", "ipxe.efi", False)
    assert (two.bios_file, two.uefi_file, two.bios_pxelinux) == (
        "pxelinux.0", "snponly.efi", True)
    assert catalog.dhcp_lookup(MAC1) is one  # cached
    assert catalog.dhcp_lookup(MacAddress.parse("52:54:00:00:00:99")) is None


def test_unknown_macs_do_not_grow_the_cache() -> None:
    """The cache is keyed by inventory nodes, never by what a DHCP client sends."""
    catalog = _catalog()
    for i in range(256):
        catalog.dhcp_lookup(MacAddress.parse(f"52:54:00:00:01:{i:02x}"))
    assert len(catalog._dhcp) == 0


def test_a_replaced_catalog_is_freed_with_its_caches() -> None:
    """A reload swaps the catalog: nothing (a class-level `lru_cache` on a method, say) may
    keep the old one, and its whole cluster, alive."""
    catalog = _catalog()
    catalog.dhcp_lookup(MAC1)
    hit = catalog.virtual_file(ipxe_filename("node01"))
    assert hit is not None and hit.node == "node01"
    hit = catalog.virtual_file(pxelinux_filename(MAC2))
    assert hit is not None and hit.node == "node02"
    ref = weakref.ref(catalog)
    del catalog, hit
    gc.collect()
    assert ref() is None
