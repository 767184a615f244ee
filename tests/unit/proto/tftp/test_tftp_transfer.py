"""The read-transfer machine, driven without sockets: a scripted client on an in-memory link."""

from __future__ import annotations

import hashlib
import itertools
import random

import pytest

from oneroot.proto.tftp import (
    Ack,
    BytesSource,
    Data,
    Error,
    ErrorCode,
    Failed,
    Finished,
    OptionAck,
    Packet,
    ReadRequest,
    ReadTransfer,
    SendDatagram,
    SetTimer,
    TransferConfig,
    parse_packet,
    to_netascii,
)
from oneroot.proto.tftp.transfer import Action

CONFIG = TransferConfig(max_blksize=1468, max_windowsize=64, timeout=1.0, max_retries=3)


def rrq(mode: str = "octet", **options: int | str) -> ReadRequest:
    return ReadRequest(filename="f", mode=mode,
                       options=tuple((k, str(v)) for k, v in options.items()))


def drain(t: ReadTransfer) -> list[Action]:
    out = []
    while (action := t.next_action()) is not None:
        out.append(action)
    return out


def sent(actions: list[Action]) -> list[Packet]:
    return [parse_packet(a.data) for a in actions if isinstance(a, SendDatagram)]


def blocks(actions: list[Action]) -> list[int]:
    return [p.block for p in sent(actions) if isinstance(p, Data)]


def ack(n: int) -> bytes:
    return Ack(block=n & 0xFFFF).to_bytes()


class PatternSource:
    """A large deterministic source that keeps nothing in memory."""

    def __init__(self, size: int) -> None:
        self._size, self._pos, self.closed = size, 0, False

    def read(self, n: int, /) -> bytes:
        n = min(n, self._size - self._pos)
        start = self._pos
        self._pos += n
        return bytes((start + i) & 0xFF for i in range(n)) if n < 64 else bytes(
            (i & 0xFF) for i in range(start, start + n)
        )

    def size(self) -> int:
        return self._size

    def close(self) -> None:
        self.closed = True


def download(t: ReadTransfer, *, now: float = 0.0, expect_oack: bool = False) -> bytes:
    """A well-behaved client: ACK 0 after an OACK, then ACK at each window end or short block."""
    actions = drain(t)
    out = bytearray()
    expected = 1
    if expect_oack:
        assert isinstance(sent(actions)[0], OptionAck)
        t.datagram_received(ack(0), now=now)
        actions = drain(t)
    while True:
        datas = [p for p in sent(actions) if isinstance(p, Data)]
        assert datas, actions
        last = None
        for d in datas:
            assert d.block == expected & 0xFFFF
            out += d.data
            expected += 1
            last = d
        assert last is not None
        t.datagram_received(ack(last.block), now=now)
        actions = drain(t)
        if any(isinstance(a, Finished) for a in actions):
            assert not sent(actions)
            return bytes(out)


def test_rfc1350_without_options() -> None:
    data = bytes(range(256)) * 5  # 1280 bytes: blocks of 512, 512, 256
    t = ReadTransfer(BytesSource(data), rrq(), CONFIG, now=10.0)
    actions = drain(t)
    assert sent(actions) == [Data(block=1, data=data[:512])]
    assert actions[-1] == SetTimer(11.0)
    t.datagram_received(ack(1), now=10.2)
    assert sent(drain(t)) == [Data(block=2, data=data[512:1024])]
    t.datagram_received(ack(2), now=10.4)
    assert sent(drain(t)) == [Data(block=3, data=data[1024:])]
    t.datagram_received(ack(3), now=10.5)
    (finished,) = drain(t)
    assert isinstance(finished, Finished)
    assert (finished.stats.blocks, finished.stats.bytes, finished.stats.blksize) == (3, 1280, 512)


def test_download_whole_file_and_stats() -> None:
    data = random.Random(1).randbytes(5000)
    t = ReadTransfer(BytesSource(data), rrq(), CONFIG, now=0.0)
    assert download(t, now=2.5) == data
    stats = t.stats
    assert (stats.bytes, stats.blocks, stats.retransmits, stats.duration) == (5000, 10, 0, 2.5)
    assert t.finished


@pytest.mark.parametrize(("size", "nblocks", "last_len"),
                         [(0, 1, 0), (511, 1, 511), (512, 2, 0), (1024, 3, 0), (1025, 3, 1)])
def test_last_block_is_short_even_when_empty(size: int, nblocks: int, last_len: int) -> None:
    t = ReadTransfer(BytesSource(b"x" * size), rrq(), CONFIG, now=0.0)
    datas: list[Data] = []
    actions = drain(t)
    while True:
        new = [p for p in sent(actions) if isinstance(p, Data)]
        datas += new
        t.datagram_received(ack(new[-1].block), now=0.0)
        actions = drain(t)
        if any(isinstance(a, Finished) for a in actions):
            break
    assert len(datas) == nblocks
    assert len(datas[-1].data) == last_len


def test_oack_then_ack0_starts_data() -> None:
    t = ReadTransfer(BytesSource(b"a" * 3000), rrq(blksize=1468, tsize=0), CONFIG, now=0.0)
    actions = drain(t)
    assert sent(actions) == [OptionAck(options=(("blksize", "1468"), ("tsize", "3000")))]
    t.datagram_received(ack(0), now=0.1)
    actions = drain(t)
    (packet,) = sent(actions)
    assert isinstance(packet, Data)
    assert (packet.block, len(packet.data)) == (1, 1468)


def test_clamped_blksize_and_windowsize_are_used() -> None:
    config = TransferConfig(max_blksize=1024, max_windowsize=4)
    t = ReadTransfer(BytesSource(b"z" * 100_000), rrq(blksize=65464, windowsize=16), config,
                     now=0.0)
    assert sent(drain(t)) == [OptionAck(options=(("blksize", "1024"), ("windowsize", "4")))]
    t.datagram_received(ack(0), now=0.0)
    datas = [p for p in sent(drain(t)) if isinstance(p, Data)]
    assert [d.block for d in datas] == [1, 2, 3, 4]
    assert {len(d.data) for d in datas} == {1024}


def test_window_advances_on_ack_of_its_last_block() -> None:
    t = ReadTransfer(BytesSource(b"w" * 512 * 40), rrq(windowsize=16), CONFIG, now=0.0)
    drain(t)
    t.datagram_received(ack(0), now=0.0)
    assert blocks(drain(t)) == list(range(1, 17))
    t.datagram_received(ack(16), now=0.0)
    assert blocks(drain(t)) == list(range(17, 33))


def test_window_download_intact() -> None:
    data = random.Random(2).randbytes(512 * 100 + 17)
    t = ReadTransfer(BytesSource(data), rrq(windowsize=7), CONFIG, now=0.0)
    assert download(t, expect_oack=True) == data
    assert t.stats.retransmits == 0


def test_duplicate_ack_never_resends() -> None:
    """The sorcerer's apprentice bug: a delayed duplicate ACK must not double the traffic."""
    t = ReadTransfer(BytesSource(b"d" * 5000), rrq(), CONFIG, now=0.0)
    assert blocks(drain(t)) == [1]
    t.datagram_received(ack(1), now=0.0)
    assert blocks(drain(t)) == [2]
    t.datagram_received(ack(1), now=0.0)  # duplicate of an ACK already acted on
    assert drain(t) == []
    t.datagram_received(ack(0), now=0.0)  # older still
    assert drain(t) == []
    t.datagram_received(ack(2), now=0.0)
    assert blocks(drain(t)) == [3]
    assert t.stats.duplicate_acks == 2
    assert t.stats.retransmits == 0


def test_duplicate_ack_in_window_mode_never_resends() -> None:
    t = ReadTransfer(BytesSource(b"d" * 512 * 64), rrq(windowsize=8), CONFIG, now=0.0)
    drain(t)
    t.datagram_received(ack(0), now=0.0)
    drain(t)
    t.datagram_received(ack(8), now=0.0)
    assert blocks(drain(t)) == list(range(9, 17))
    for _ in range(3):
        t.datagram_received(ack(8), now=0.0)
        assert drain(t) == []
    t.datagram_received(ack(40), now=0.0)  # beyond what was sent: ignored, too
    assert drain(t) == []
    assert t.stats.duplicate_acks == 4


def test_partial_window_ack_restarts_the_window() -> None:
    """RFC 7440: the client ACKs the last block it got in order; go on from the next one."""
    t = ReadTransfer(BytesSource(b"p" * 512 * 64), rrq(windowsize=8), CONFIG, now=0.0)
    drain(t)
    t.datagram_received(ack(0), now=0.0)
    assert blocks(drain(t)) == list(range(1, 9))
    t.datagram_received(ack(5), now=0.0)  # the client lost block 6
    assert blocks(drain(t)) == [6, 7, 8, 9, 10, 11, 12, 13]
    assert t.stats.retransmits == 3


def test_timeout_retransmits_the_unacked_window_then_gives_up() -> None:
    t = ReadTransfer(BytesSource(b"t" * 512 * 10), rrq(windowsize=4), CONFIG, now=0.0)
    drain(t)
    t.datagram_received(ack(0), now=0.0)
    drain(t)
    t.datagram_received(ack(2), now=0.5)  # partial: resends 3, 4 and adds 5, 6
    assert blocks(drain(t)) == [3, 4, 5, 6]
    t.timer_expired(now=1.0)  # stale: the deadline moved to 1.5
    assert drain(t) == []
    now = 1.5
    for attempt in range(1, 4):
        t.timer_expired(now=now)
        actions = drain(t)
        assert blocks(actions) == [3, 4, 5, 6]
        interval = min(2.0**attempt, CONFIG.max_interval)  # backoff: 2, 4, 8
        assert SetTimer(now + interval) in actions
        now += interval
    t.timer_expired(now=now)
    actions = drain(t)
    (error,) = sent(actions)
    assert isinstance(error, Error)
    assert error.code == ErrorCode.NOT_DEFINED
    failed = actions[-1]
    assert isinstance(failed, Failed)
    assert failed.stats.retransmits == 2 + 12
    assert not failed.by_peer
    assert t.finished
    t.timer_expired(now=100.0)
    t.datagram_received(ack(6), now=100.0)
    assert drain(t) == []


def test_backoff_is_capped() -> None:
    config = TransferConfig(timeout=1.0, max_retries=10, max_interval=3.0)
    t = ReadTransfer(BytesSource(b"r" * 100), rrq(), config, now=0.0)
    deadlines = [a.deadline for a in drain(t) if isinstance(a, SetTimer)]
    for _ in range(5):
        t.timer_expired(now=deadlines[-1])
        deadlines += [a.deadline for a in drain(t) if isinstance(a, SetTimer)]
    assert [b - a for a, b in itertools.pairwise(deadlines)] == [2, 3, 3, 3, 3]


def test_progress_resets_the_retry_count() -> None:
    t = ReadTransfer(BytesSource(b"r" * 512 * 20), rrq(), CONFIG, now=0.0)
    drain(t)
    now = 0.0
    for block in range(1, 21):
        for wait in (1.0, 2.0, 4.0):  # max_retries timeouts per block, never more
            now += wait
            t.timer_expired(now=now)
            assert blocks(drain(t)) == [block]
        t.datagram_received(ack(block), now=now)
        assert SetTimer(now + 1.0) in drain(t)  # back to the base interval
    assert t.stats.retransmits == 60


def test_oack_is_retransmitted_on_timeout() -> None:
    t = ReadTransfer(BytesSource(b"o" * 10), rrq(tsize=0), CONFIG, now=0.0)
    first = sent(drain(t))
    t.timer_expired(now=1.0)
    assert sent(drain(t)) == first
    assert t.stats.retransmits == 1


def test_negotiated_timeout_sets_the_timer() -> None:
    t = ReadTransfer(BytesSource(b"o" * 10), rrq(timeout=3), CONFIG, now=5.0)
    assert SetTimer(8.0) in drain(t)


def test_client_error_after_oack_ends_without_answer() -> None:
    t = ReadTransfer(BytesSource(b"o" * 10), rrq(blksize=9000), CONFIG, now=0.0)
    drain(t)
    t.datagram_received(Error(code=ErrorCode.OPTION_REFUSED, message="no").to_bytes(), now=0.0)
    actions = drain(t)
    assert sent(actions) == []
    (failed,) = actions
    assert isinstance(failed, Failed)
    assert failed.by_peer
    assert failed.error_code == 8


def _ended_by(options: dict[str, int], code: ErrorCode, *, acked: bool) -> Failed:
    t = ReadTransfer(BytesSource(b"o" * 3000), rrq(**options), CONFIG, now=0.0)
    drain(t)
    if acked:  # ACK 0: DATA 1 goes out
        t.datagram_received(ack(0), now=0.0)
        drain(t)
    t.datagram_received(Error(code=code, message="TFTP Aborted").to_bytes(), now=0.0)
    (failed,) = drain(t)
    assert isinstance(failed, Failed)
    return failed


@pytest.mark.parametrize(
    ("options", "code", "acked", "probe"),
    [
        ({"tsize": 0}, ErrorCode.NOT_DEFINED, False, True),  # a PXE ROM's size probe
        ({"tsize": 0, "blksize": 1468}, ErrorCode.NOT_DEFINED, False, True),
        ({"tsize": 0}, ErrorCode.OPTION_REFUSED, False, False),  # it refuses our options
        ({"blksize": 1468}, ErrorCode.NOT_DEFINED, False, False),  # no tsize asked
        ({"tsize": 0}, ErrorCode.NOT_DEFINED, True, False),  # data was already sent
    ],
    ids=["tsize", "tsize-blksize", "option-refused", "no-tsize", "after-data"],
)
def test_size_probe(options: dict[str, int], code: ErrorCode, acked: bool, probe: bool) -> None:
    assert _ended_by(options, code, acked=acked).size_probe is probe


def test_our_own_error_is_never_a_size_probe() -> None:
    t = ReadTransfer(BytesSource(b"o" * 10), rrq(tsize=0), CONFIG, now=0.0)
    drain(t)
    for now in (1.0, 3.0, 7.0, 15.0):
        t.timer_expired(now=now)
    failed = drain(t)[-1]
    assert isinstance(failed, Failed) and failed.stats.tsize == 10
    assert not failed.by_peer and not failed.size_probe


def test_unterminated_client_error_still_ends() -> None:
    t = ReadTransfer(BytesSource(b"o" * 10), rrq(), CONFIG, now=0.0)
    drain(t)
    t.datagram_received(b"\x00\x05\x00\x03disk full", now=0.0)
    (failed,) = drain(t)
    assert isinstance(failed, Failed)
    assert (failed.error_code, failed.by_peer) == (3, True)


@pytest.mark.parametrize("mode", ["mail", "binary", ""])
def test_unsupported_mode(mode: str) -> None:
    source = PatternSource(10)
    t = ReadTransfer(source, rrq(mode=mode), CONFIG, now=0.0)
    actions = drain(t)
    assert sent(actions) == [Error(code=ErrorCode.ILLEGAL_OPERATION,
                                   message=f"transfer mode {mode!r} not supported")]
    assert isinstance(actions[-1], Failed)
    assert source.closed


def test_mode_is_case_insensitive() -> None:
    t = ReadTransfer(BytesSource(b"x"), rrq(mode="OCTET"), CONFIG, now=0.0)
    assert blocks(drain(t)) == [1]


@pytest.mark.parametrize("packet", [
    Data(block=1, data=b"x"),
    ReadRequest(filename="g", mode="octet"),
    OptionAck(options=(("blksize", "512"),)),
])
def test_unexpected_packet_is_an_illegal_operation(packet: Packet) -> None:
    t = ReadTransfer(BytesSource(b"x" * 600), rrq(), CONFIG, now=0.0)
    drain(t)
    t.datagram_received(packet.to_bytes(), now=0.0)
    actions = drain(t)
    (error,) = sent(actions)
    assert isinstance(error, Error)
    assert error.code == ErrorCode.ILLEGAL_OPERATION
    assert isinstance(actions[-1], Failed)


def test_garbage_is_ignored() -> None:
    t = ReadTransfer(BytesSource(b"x" * 600), rrq(), CONFIG, now=0.0)
    drain(t)
    for junk in (b"", b"\x00", b"\x00\x04\x00", b"\xff" * 30):
        t.datagram_received(junk, now=0.0)
        assert drain(t) == []
    t.datagram_received(ack(1), now=0.0)
    assert blocks(drain(t)) == [2]


def test_read_error_fails_with_error_0() -> None:
    class Broken(PatternSource):
        def read(self, n: int, /) -> bytes:
            raise OSError(5, "Input/output error")

    t = ReadTransfer(Broken(100), rrq(), CONFIG, now=0.0)
    actions = drain(t)
    assert sent(actions) == [Error(code=0, message="read error: Input/output error")]
    assert isinstance(actions[-1], Failed)


def test_source_closed_when_finished() -> None:
    source = PatternSource(700)
    t = ReadTransfer(source, rrq(), CONFIG, now=0.0)
    download(t)
    assert source.closed


@pytest.mark.parametrize("windowsize", [1, 16])
def test_block_number_rollover(windowsize: int) -> None:
    """More than 65535 blocks: numbers wrap 65535 -> 0 -> 1, as tftp-hpa and curl expect."""
    size = 8 * 65536 + 3  # 65537 blocks at blksize 8; the last one holds 3 bytes
    config = TransferConfig(max_blksize=1468, max_windowsize=64)
    t = ReadTransfer(PatternSource(size), rrq(blksize=8, windowsize=windowsize), config,
                     now=0.0)
    drain(t)
    t.datagram_received(ack(0), now=0.0)
    actions = drain(t)
    wire: list[int] = []
    digest = hashlib.sha256()
    total = 0
    while not any(isinstance(a, Finished) for a in actions):
        datas = [p for p in sent(actions) if isinstance(p, Data)]
        for d in datas:
            wire.append(d.block)
            digest.update(d.data)
            total += len(d.data)
        t.datagram_received(ack(datas[-1].block), now=0.0)
        actions = drain(t)
    assert total == size
    assert len(wire) == 65537
    assert wire[65533:] == [65534, 65535, 0, 1]
    expected = hashlib.sha256(PatternSource(size).read(size)).hexdigest()
    assert digest.hexdigest() == expected
    assert t.stats.retransmits == 0


def test_old_ack_across_rollover_is_not_mistaken_for_new() -> None:
    size = 8 * 65540
    config = TransferConfig(max_blksize=1468, max_windowsize=64)
    t = ReadTransfer(PatternSource(size), rrq(blksize=8, windowsize=4), config, now=0.0)
    drain(t)
    t.datagram_received(ack(0), now=0.0)
    drain(t)
    for n in range(4, 65536 + 4, 4):
        t.datagram_received(ack(n), now=0.0)
        drain(t)
    # acked is now 65536 (wire 0); sent through 65540. An ACK for wire 65535 is old.
    t.datagram_received(ack(65535), now=0.0)
    assert drain(t) == []


# -- netascii ---------------------------------------------------------------------------------

def test_to_netascii() -> None:
    assert to_netascii(b"a\nb\r\nc\rd") == b"a\r\nb\r\0\r\nc\r\0d"


@pytest.mark.parametrize("split_at", [510, 511, 512])
def test_netascii_pairs_straddle_block_boundaries(split_at: int) -> None:
    text = b"x" * split_at + b"\n\r\n" + b"y" * 600 + b"\n"
    t = ReadTransfer(BytesSource(text), rrq(mode="netascii"), CONFIG, now=0.0)
    received = download(t)
    assert received == to_netascii(text)
    assert len(received) == len(text) + 4


def test_netascii_omits_tsize_but_keeps_blksize() -> None:
    t = ReadTransfer(BytesSource(b"l\n" * 100), rrq(mode="netascii", tsize=0, blksize=64),
                     CONFIG, now=0.0)
    assert sent(t_actions := drain(t)) == [OptionAck(options=(("blksize", "64"),))]
    assert t_actions
    t.datagram_received(ack(0), now=0.0)
    data = bytearray()
    actions = drain(t)
    while not any(isinstance(a, Finished) for a in actions):
        datas = [p for p in sent(actions) if isinstance(p, Data)]
        data += b"".join(d.data for d in datas)
        t.datagram_received(ack(datas[-1].block), now=0.0)
        actions = drain(t)
    assert bytes(data) == b"l\r\n" * 100
    assert t.stats.tsize is None


def test_netascii_large_random_text() -> None:
    rng = random.Random(3)
    text = bytes(rng.choice(b"ab\r\n") for _ in range(50_000))
    t = ReadTransfer(BytesSource(text), rrq(mode="netascii", windowsize=5), CONFIG, now=0.0)
    assert download(t, expect_oack=True) == to_netascii(text)


@pytest.mark.parametrize("options", [{}, {"blksize": 512, "tsize": 0}, {"windowsize": 4}])
def test_lockstep_ack_sends_what_the_general_path_sends(options: dict[str, int]) -> None:
    """`lockstep_ack` (the lock-step fast path) and `datagram_received` + `next_action` give the
    same datagrams, deadlines and stats; anything the fast
    path does not cover (the OACK's ACK 0, a duplicate, the final ACK, a window) it leaves
    alone."""
    data = bytes(range(256)) * 1300  # 332,800 bytes: 650 blocks of 512, 227 of 1468
    general = ReadTransfer(BytesSource(data), rrq(**options), CONFIG, now=0.0)
    fast = ReadTransfer(BytesSource(data), rrq(**options), CONFIG, now=0.0)
    out_general, out_fast = sent(drain(general)), sent(drain(fast))
    taken = 0
    for step in itertools.count(1):
        if general.finished:
            break
        last = out_general[-1]
        reply = ack(0 if isinstance(last, OptionAck) else last.block)  # type: ignore[union-attr]
        duplicate = step % 97 == 0  # now and then the client repeats an ACK first
        for packet in ([reply, reply] if duplicate else [reply]):
            general.datagram_received(packet, now=float(step))
            out_general += sent(drain(general))
            following = fast.lockstep_ack(packet, now=float(step))
            if following is None:
                fast.datagram_received(packet, now=float(step))
                out_fast += sent(drain(fast))
            else:
                taken += 1
                assert fast.next_action() is None
                out_fast.append(parse_packet(following))
            assert out_fast == out_general and fast.deadline == general.deadline
    assert fast.finished and fast.stats == general.stats
    assert (taken > 100) == ("windowsize" not in options)
