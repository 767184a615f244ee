"""`oneroot serve`: DHCP, TFTP, HTTP (and NFS, where asked) under one asyncio supervisor.

The inventory is reloaded when its database changes (SQLite: the file; PostgreSQL: a NOTIFY)
or on SIGHUP; SIGTERM/SIGINT stop cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from oneroot.errors import OnerootError
from oneroot.inventory import database
from oneroot.inventory.events import EventStore
from oneroot.inventory.leases import LeaseStore, Synchronous
from oneroot.model.cluster import NfsServerKind
from oneroot.model.events import BMC_STAGES, BOOT_IMAGE, BootEvent
from oneroot.model.limits import DEFAULT_LIMITS, Limits
from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster
from oneroot.model.server import ONE_SERVER, ServerRole
from oneroot.net import MacAddress
from oneroot.netpin import NodePinner
from oneroot.ops.admin_token import admin_token
from oneroot.ops.bootfiles import install_boot_binaries
from oneroot.ops.catalog import network_config
from oneroot.ops.health import HealthRecord
from oneroot.ops.netpin import pin_context
from oneroot.ops.nfs_serving import (
    ExportTarget,
    apply_nfs,
    ganesha_server,
    log_must_reboot,
    nfs_plan,
    remount_union_for_boot,
)
from oneroot.ops.power import store_recorder
from oneroot.ops.statefs import mount_for_serve
from oneroot.ops.status import read_status
from oneroot.ops.views import VIEW_RESCAN_SECONDS
from oneroot.overlay.whiteouts import normalize_whiteouts
from oneroot.serve.admin import AdminListen, AdminService
from oneroot.serve.bootwork import BootWork
from oneroot.serve.dhcp import DhcpHealth, DhcpService
from oneroot.serve.events import EventRecorder, watch_stored_stages
from oneroot.serve.holder import CatalogHolder, watch_inventory
from oneroot.serve.http import HttpService, RepeatedReports
from oneroot.serve.httpworkers import start_http_workers
from oneroot.serve.replication import PayloadReplicator
from oneroot.serve.statusboard import StatusBoard
from oneroot.serve.tftp import TftpService, blksize_for_interface
from oneroot.serve.viewwatch import keep_views_current

log = logging.getLogger(__name__)

STATUS_SEED_EVENTS = 5000  # stored events replayed into the status page's timelines at start


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeOptions:
    """What to run and where; the defaults come from the inventory's settings."""

    dhcp: bool = True
    tftp: bool = True
    http: bool = True
    nfs: bool = True  # apply exports; run and supervise nfs-ganesha when settings say so
    bind: str | None = None  # TFTP/HTTP address [default: settings.server_address]
    tftp_port: int = 69
    http_port: int | None = None
    dhcp_port: int = 67
    # SQLite leases: NORMAL writes each group to the WAL (the OS) before its ACKs leave, as
    # Kea's memfile writes its CSV; FULL fsyncs it too.
    lease_sync: Synchronous = "NORMAL"
    reload_interval: float = 1.0
    # Pin each node's address to its MACs on the settings' interface (nftables + permanent
    # neighbour entries); only when serve owns that interface (DHCP or NFS on it).
    pin: bool = True
    limits: Limits = DEFAULT_LIMITS
    # The administrator's listener (status page with power buttons); None: off.
    admin: AdminListen | None = None
    view_rescan: float = VIEW_RESCAN_SECONDS  # masked views of a live root kept current
    # Which server this is among several on one database, and the segments it serves.
    role: ServerRole = ONE_SERVER


async def serve(paths: Paths, options: ServeOptions = ServeOptions(),
                *, started: Callable[[], None] | None = None) -> None:
    role = options.role
    holder = CatalogHolder(paths, options.bind, role)
    settings = holder.inventory.settings
    bind = options.bind or str(settings.server_address)
    boot_dir = holder.cluster.dirs.boot_dir
    boot_dir.mkdir(parents=True, exist_ok=True)
    install_boot_binaries(boot_dir)
    limits = options.limits
    events = EventStore(database.locate(paths, paths.events_db))
    recorder = EventRecorder(events, lambda ip: holder.catalog.by_address.get(ip), limits,
                             server=role.id)
    board = _status_board(holder, events, recorder, limits)
    health = HealthRecord(paths)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: holder.reload(force=True))

    jobs: list[Callable[[], Coroutine[Any, Any, None]]] = [recorder.run]
    closers: list[Callable[[], Awaitable[None] | None]] = [board.close]
    leases: LeaseStore | None = None
    if options.dhcp:
        leases = LeaseStore(database.locate(paths, paths.leases_db),
                            synchronous=options.lease_sync, server=role.id)
        jobs.append(_dhcp_service(holder, options, leases, recorder, health).run)
    if options.tftp:
        await _start_tftp(holder, options, IPv4Address(bind), boot_dir, recorder, jobs, closers)
    http_port = options.http_port or settings.http_port
    payloads = await _start_replication(paths, holder, role, f"http://{bind}:{http_port}",
                                        limits, jobs, closers)
    if options.http:
        reports = RepeatedReports(recorder)  # here, where every HTTP worker's events arrive
        http = HttpService(bind=bind, port=http_port, boot_dir=boot_dir,
                           catalog=lambda: holder.catalog, on_event=reports,
                           status=lambda: read_status(paths, holder.cluster).as_json(),
                           limits=limits, board=board, payloads=payloads)
        if limits.http_workers and payloads is None:
            workers = await start_http_workers(
                http, paths=paths, http_host=options.bind, role=role, limits=limits,
                reload_interval=options.reload_interval, on_event=reports)
            closers.append(workers.close)
            jobs.append(workers.run)
            holder.listeners.append(lambda cluster: workers.reload())  # now, not at a poll
        else:  # several servers: boot files follow the replicator, in this process
            await http.start()
            closers.append(http.close)
    if options.admin is not None:
        await _start_admin(options.admin, paths, holder, board, recorder, closers)
    if options.pin and (options.dhcp or options.nfs):
        await _start_pins(holder, IPv4Address(bind), closers, recorder)
    if options.nfs:
        await _start_nfs(paths, holder, IPv4Address(bind), jobs, closers, recorder, limits,
                         view_rescan=options.view_rescan)
    jobs.append(lambda: watch_inventory(holder, options.reload_interval))
    jobs.append(_bmc_stage_watcher(paths, recorder, options.reload_interval, closers))
    log.info("serve.started bind=%s dhcp=%s tftp=%s http=%s nodes=%d server=%s", bind,
             options.dhcp, options.tftp, options.http, len(holder.inventory.nodes),
             role.id or "-")
    if started is not None:
        started()
    try:
        await _run_until(stop, jobs)
    except* OnerootError as failed:  # a job that cannot go on (HTTP workers that cannot start)
        raise failed.exceptions[0] from None
    finally:
        for close in closers:
            result = close()
            if result is not None:
                await result
        await recorder.flush()
        events.close()
        health.close()
        holder.close()
        if leases is not None:
            with contextlib.suppress(Exception):
                leases.close()
        log.info("serve.stopped")


def _dhcp_service(holder: CatalogHolder, options: ServeOptions, leases: LeaseStore,
                  recorder: EventRecorder, health: HealthRecord) -> DhcpService:
    """DHCP on the settings' interface; a reload updates its network, never its socket."""
    settings = holder.inventory.settings
    dhcp = DhcpService(
        interface=settings.interface, server_address=settings.server_address,
        network=network_config(holder.inventory),
        lookup=lambda mac: holder.catalog.dhcp_lookup(mac),
        leases=leases, on_event=recorder, port=options.dhcp_port,
        is_reserved=lambda ip: ip in holder.catalog.by_address, limits=options.limits,
        on_health=_health_reporter(health), relays=options.role.relays,
        pool_events=False)  # the recorder keeps no pool client's reply

    def dhcp_settings(cluster: ResolvedCluster) -> None:
        inv = cluster.inventory
        new = network_config(inv)
        if (new.server_address, inv.settings.interface) != (dhcp.server_address,
                                                            dhcp.interface):
            log.warning("serve.restart_needed reason=server address or interface changed")
            return
        if new.peers != dhcp.network.peers:  # their sockets are opened at start
            log.warning("serve.restart_needed reason=the peers of ha_servers changed")
        dhcp.network = new

    holder.listeners.append(dhcp_settings)
    return dhcp


async def _start_tftp(holder: CatalogHolder, options: ServeOptions, bind: IPv4Address,
                      boot_dir: Path, recorder: EventRecorder,
                      jobs: list[Callable[[], Coroutine[Any, Any, None]]],
                      closers: list[Callable[[], Awaitable[None] | None]]) -> None:
    limits = options.limits

    def virtual(name: str) -> bytes | None:
        hit = holder.catalog.virtual_file(name)
        if hit is not None and hit.node is not None and hit.image is not None:
            recorder(BootEvent(time=time.time(), kind=BOOT_IMAGE, node=hit.node, file=name,
                               detail={"image": hit.image}))
        return hit.data if hit else None

    tftp = TftpService(bind=bind, port=options.tftp_port, root=boot_dir,
                       virtual=virtual, on_event=recorder,
                       max_sessions=limits.tftp_sessions,
                       max_sessions_per_client=limits.tftp_sessions_per_client,
                       lockstep_threads=limits.tftp_lockstep_threads,
                       max_option_timeout=limits.tftp_option_timeout,
                       max_blksize=blksize_for_interface(holder.inventory.settings.interface))

    def tftp_blksize(cluster: ResolvedCluster) -> None:
        # The serving interface's MTU bounds blksize; read again on every reload (SIGHUP).
        tftp.max_blksize = blksize_for_interface(cluster.inventory.settings.interface)

    holder.listeners.append(tftp_blksize)
    await tftp.start()
    jobs.append(tftp.run)
    closers.append(tftp.close)


async def _start_replication(paths: Paths, holder: CatalogHolder, role: ServerRole, url: str,
                             limits: Limits,
                             jobs: list[Callable[[], Coroutine[Any, Any, None]]],
                             closers: list[Callable[[], Awaitable[None] | None]]
                             ) -> PayloadReplicator | None:
    """With several servers on one PostgreSQL (this one has an id), boot files follow their
    content hash: synced once before anything is served, then kept so."""
    db_url = database.database_url(paths)
    if role.id is None or db_url is None:
        return None
    replicator = PayloadReplicator(db_url, boot_dir=holder.cluster.dirs.boot_dir,
                                   server=role.id, url=url, peers=role.peers, limits=limits)
    try:
        await replicator.sync()
    except Exception as exc:  # a peer away: start with what is here, the loop tries again
        log.error("payload.sync_failed error=%s: %s", type(exc).__name__, str(exc).strip())
    holder.listeners.append(lambda cluster: replicator.poke())
    jobs.append(replicator.run)
    closers.append(replicator.close)
    return replicator


def _bmc_stage_watcher(paths: Paths, recorder: EventRecorder, interval: float,
                       closers: list[Callable[[], Awaitable[None] | None]]
                       ) -> Callable[[], Coroutine[Any, Any, None]]:
    """The job that pushes the BMC stages `oneroot power` (or the admin page) stored."""
    store = EventStore(database.locate(paths, paths.events_db))
    closers.append(store.close)
    return lambda: watch_stored_stages(store, recorder, BMC_STAGES, interval)


async def _run_until(stop: asyncio.Event,
                     jobs: list[Callable[[], Coroutine[Any, Any, None]]]) -> None:
    """Run every job in one TaskGroup until `stop` is set, then cancel them all."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(job()) for job in jobs]
            await stop.wait()
            for task in tasks:
                task.cancel()
    except* asyncio.CancelledError:
        pass


def _status_board(holder: CatalogHolder, events: EventStore, recorder: EventRecorder,
                  limits: Limits) -> StatusBoard:
    """The web page's live state, its timelines replayed from the stored events."""
    addresses = _NodeAddresses(holder)
    board = StatusBoard(lambda: addresses, max_streams=limits.status_streams)
    board.seed(events.recent(STATUS_SEED_EVENTS))
    recorder.listeners.append(board)
    return board


class _NodeAddresses(Mapping[str, IPv4Address]):
    """Each node's address, read through to the current catalog (reloads included). The board
    asks on every event: a lookup is one node's entry, not a dict rebuilt over every node."""

    def __init__(self, holder: CatalogHolder) -> None:
        self._holder = holder

    def __getitem__(self, name: str) -> IPv4Address:
        return self._holder.cluster.nodes[name].node.address

    def __contains__(self, name: object) -> bool:
        return name in self._holder.cluster.nodes

    def __iter__(self) -> Iterator[str]:
        return iter(self._holder.cluster.nodes)

    def __len__(self) -> int:
        return len(self._holder.cluster.nodes)


async def _start_admin(listen: AdminListen, paths: Paths, holder: CatalogHolder,
                       board: StatusBoard, recorder: EventRecorder,
                       closers: list[Callable[[], Awaitable[None] | None]]) -> None:
    admin = AdminService(listen=listen, token=admin_token(paths), board=board,
                         cluster=lambda: holder.cluster, record=store_recorder(paths))
    await admin.start()
    closers.append(admin.close)


async def _start_pins(holder: CatalogHolder, bind: IPv4Address,
                      closers: list[Callable[[], Awaitable[None] | None]],
                      recorder: EventRecorder) -> None:
    """Pin every node's address to its MACs before anything is served, again on every
    inventory change (MACs added, changed, removed), and unpin when serve stops. A node's
    neighbour entry follows the MAC it last got a DHCP ACK on."""
    pinner = NodePinner(interface=holder.inventory.settings.interface)
    await asyncio.to_thread(pinner.apply, pin_context(holder.inventory, server_address=bind))
    lock = asyncio.Lock()

    async def repin(new: ResolvedCluster) -> None:
        ctx = pin_context(new.inventory, server_address=bind)
        async with lock:
            if ctx == pinner.ctx:
                return
            try:
                await asyncio.to_thread(pinner.apply, ctx)
            except OnerootError as exc:  # the old pins stay in place
                log.error("netpin.apply_failed error=%s", exc)

    async def bind_mac(address: IPv4Address, mac: MacAddress) -> None:
        async with lock:
            await asyncio.to_thread(pinner.bind, address, mac)

    def on_ack(event: BootEvent) -> None:
        node = holder.inventory.nodes.get(event.node or "")
        if event.kind == "dhcp.ack" and node is not None and event.mac is not None:
            mac = MacAddress.parse(event.mac)
            # No thread for an entry that stays as it is: 3 ACKs per node in a boot storm,
            # each a GIL hand-off to a worker (bench/storm's profile).
            if lock.locked() or not pinner.bind_in_place(node.address, mac):
                _spawn(bind_mac(node.address, mac))

    async def unpin() -> None:
        async with lock:
            try:
                await asyncio.to_thread(pinner.remove)
            except OnerootError as exc:  # the other closers (ganesha) must still run
                log.error("netpin.remove_failed error=%s", exc)

    holder.listeners.append(lambda new: _spawn(repin(new)))
    recorder.listeners.append(on_ack)
    closers.append(unpin)


def _health_reporter(record: HealthRecord) -> Callable[[DhcpHealth], None]:
    """Write the DHCP health at most once a second, and at once when it changes state."""
    last = [0.0, False]

    def report(health: DhcpHealth) -> None:
        now = time.monotonic()
        if health.failing == last[1] and now - last[0] < 1.0:
            return
        last[:] = [now, health.failing]
        record.update({"dhcp": {
            "lease_commit_failing": health.failing,
            "lease_commit_failures": health.commit_failures,
            "replies_dropped": health.replies_dropped,
            "last_error": health.last_error, "last_failure": health.last_failure,
            "last_commit": health.last_commit}})

    return report


async def _start_nfs(paths: Paths, holder: CatalogHolder, bind: IPv4Address,
                     jobs: list[Callable[[], Coroutine[Any, Any, None]]],
                     closers: list[Callable[[], Awaitable[None] | None]],
                     recorder: EventRecorder, limits: Limits, *,
                     view_rescan: float) -> None:
    """Directories, identities, views and unions first, then the NFS server; again on every
    change. A `union=server` node's union is remounted when the node fetches its boot script
    (once per boot, seconds before its initramfs mounts the root), so it sees the image as it
    is now; `BootWork` decides which fetches count. One lock keeps remounts and re-applies
    from interleaving."""
    cluster = holder.cluster
    lock = asyncio.Lock()
    # The state filesystem first (after a reboot without an fstab line, it is not mounted).
    await asyncio.to_thread(mount_for_serve, cluster.settings, paths)
    await asyncio.to_thread(_apply_nfs, cluster, paths)
    jobs.append(lambda: keep_views_current(lambda: holder.cluster, paths,
                                           interval=view_rescan, lock=lock))
    ganesha = NfsServerKind(cluster.settings.nfs_server).is_ganesha
    target = ExportTarget(bind=bind if ganesha else None)

    def address_of(node: str) -> IPv4Address | None:
        found = holder.cluster.nodes.get(node)
        return found.node.address if found is not None else None

    def is_boot_script(node: str, file: str) -> bool:
        hit = holder.catalog.virtual_file(file)
        return hit is not None and hit.node == node

    async def prepare(node: str) -> None:
        current = holder.cluster
        if node not in current.nodes:
            return
        if node in current.union_nodes():
            await remount(current, node)
        else:
            await normalize(current, node)

    async def normalize(current: ResolvedCluster, node: str) -> None:
        """fuse-overlayfs's `.wh.` fallbacks become `c 0 0` before the node mounts its layer."""
        upper = current.dirs.node_upper(node)
        async with lock:
            report = await asyncio.to_thread(normalize_whiteouts, upper)
        if report.converted or report.opaque:
            log.info("overlay.whiteouts_normalized node=%s whiteouts=%d opaque=%d", node,
                     len(report.converted), len(report.opaque))

    async def remount(current: ResolvedCluster, node: str) -> None:
        async with lock:
            done = await asyncio.to_thread(remount_union_for_boot, current, paths, node, target)
        log.info("nfs.union.boot_remount node=%s remounted=%s", node, done)

    boot_work = BootWork(limits=limits, address_of=address_of, is_boot_script=is_boot_script,
                         work=prepare, clock=time.time)
    recorder.listeners.append(boot_work.gate)
    if not ganesha:
        async def reapply_knfsd(new: ResolvedCluster) -> None:
            async with lock:
                await asyncio.to_thread(_apply_nfs, new, paths)

        holder.listeners.append(lambda new: _spawn(reapply_knfsd(new)))
        return
    kind = NfsServerKind(cluster.settings.nfs_server)  # ganesha or ganesha-ceph, for good
    server = ganesha_server(cluster, paths, bind=bind)

    async def run_ganesha() -> None:
        await server.run()

    async def reapply(new: ResolvedCluster) -> None:
        async with lock:
            await asyncio.to_thread(_apply_nfs, new, paths)
            action = await server.reload(nfs_plan(new, paths, kind=kind, bind=bind).text)
        log.info("nfs.reloaded action=%s", action)

    jobs.append(run_ganesha)
    closers.append(server.aclose)
    holder.listeners.append(lambda new: _spawn(reapply(new)))


def _apply_nfs(cluster: ResolvedCluster, paths: Paths) -> None:
    """`apply_nfs`, and a line for each running node it leaves holding stale handles."""
    for item in apply_nfs(cluster, paths).must_reboot:
        log_must_reboot(item)


_background: set[asyncio.Task[Any]] = set()


def _spawn(coro: Coroutine[Any, Any, Any]) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    _background.add(task)

    def done(t: asyncio.Task[Any]) -> None:
        _background.discard(t)
        if not t.cancelled() and t.exception() is not None:
            log.error("nfs.apply_failed error=%s", t.exception())

    task.add_done_callback(done)
