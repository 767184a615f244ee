"""Test and benchmark helpers shipped with the package (like `trio.testing`).

The top layer: it may import any part of oneroot, and no product module imports it.

- `oneroot.testing.netns`: two network namespaces joined through the lab's bridge
- `oneroot.testing.ports`: `free_port()`
- `oneroot.testing.dhcpclient`: `Udhcpc`, busybox udhcpc's lease as a dict
- `oneroot.testing.pxeboot`: `pxe_boot()`, a node's whole PXE sequence with real clients
- `oneroot.testing.nfsclient`: the userspace NFSv4 client (libnfs-utils, libnfs)
- `oneroot.testing.inventory`: `make_inventory()` and its nodes, groups, settings
- `oneroot.testing.labprobe`: probe scripts a lab node runs after boot
- `oneroot.testing.render_example`: the example cluster of the renderer tests and goldens
- `oneroot.testing.ganesha`: the EXPORT blocks of a rendered ganesha.conf
- `oneroot.testing.ceph`: a throwaway single-host Ceph with a CephFS (`ceph_cluster` fixture)
- `oneroot.testing.files`: `tree_snapshot()`, to prove an attack left files untouched
"""
