from pathlib import Path, PurePosixPath
from oneroot.model import Image, NfsServerKind
from oneroot.model.paths import Paths
from oneroot.model.resolved import resolve_cluster
from oneroot.ops.nfs_serving import nfs_plan
from oneroot.testing.inventory import make_inventory, make_node
for root in ("/var/lib/oneroot/images/small", "/srv/images/small"):
    inv = make_inventory(nodes=[make_node(1), make_node(2, image="small")],
                         images=[Image(name="small", root=PurePosixPath(root))])
    plan = nfs_plan(resolve_cluster(inv), Paths(home=Path("/var/lib/oneroot")), kind=NfsServerKind.KNFSD)
    print(root); print(plan.text); print(plan.binds); print(plan.views["default"].junctions)
