"""`oneroot serve`'s log formatter writes what the stock formatter writes."""

from __future__ import annotations

import asyncio
import io
import logging
import sys
from pathlib import Path
from typing import TextIO

import pytest

from oneroot.cli.logformat import LOG_FORMAT, LoopBatchingHandler, ServeFormatter


def _record(created: float, msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("oneroot.serve.dhcp", logging.INFO, __file__, 1, msg, args,
                               exc_info)
    record.created = created
    record.msecs = (created - int(created)) * 1000
    return record


def test_lines_are_the_stock_formatters() -> None:
    mine, stock = ServeFormatter(), logging.Formatter(LOG_FORMAT)
    # within one second, across seconds, back in time, with arguments and an exception
    times = [1_796_000_000.001, 1_796_000_000.999, 1_796_000_001.5, 1_796_000_000.25,
             1_796_086_399.9995, 1_796_086_400.0]
    for created in times:
        for record_args in (("dhcp.ack mac=%s ip=%s", "02:00:00:00:00:01", "10.1.0.9"),
                            ("plain",)):
            for exc in (False, True):
                a = _record(created, *record_args, exc=exc)
                b = _record(created, *record_args, exc=exc)
                assert mine.format(a) == stock.format(b)


def test_the_date_is_formatted_once_per_second() -> None:
    mine = ServeFormatter()
    calls = []
    real = mine.converter

    def counting(seconds: float | None) -> object:
        calls.append(seconds)
        return real(seconds)

    mine.converter = counting  # type: ignore[assignment]
    for i in range(100):
        mine.format(_record(1_796_000_000 + i / 100, "dhcp.offer"))
    assert len(calls) == 1


class _CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def _logger(stream: TextIO) -> tuple[logging.Logger, LoopBatchingHandler]:
    handler = LoopBatchingHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"test_logformat.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger, handler


def test_lines_of_one_loop_iteration_are_written_together_in_order() -> None:
    stream = _CountingStream()
    logger, handler = _logger(stream)

    async def serve() -> tuple[str, str]:
        for i in range(10):
            logger.info("reply %d", i)
        during = stream.getvalue()  # nothing yet: the batch goes at the iteration's end
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return during, stream.getvalue()

    during, after = asyncio.run(serve())
    assert during == ""
    assert after == "".join(f"reply {i}\n" for i in range(10))
    assert stream.writes == 1
    handler.close()


def test_other_threads_and_shutdown_flush_what_is_pending() -> None:
    stream = _CountingStream()
    logger, handler = _logger(stream)

    async def serve() -> None:
        logger.info("on the loop")
        await asyncio.to_thread(logger.info, "from a thread")  # written at once, in order
        assert stream.getvalue() == "on the loop\nfrom a thread\n"
        logger.info("pending when the loop stops")
        assert stream.getvalue() == "on the loop\nfrom a thread\n"
        handler.flush()  # as logging.shutdown() does at exit
        assert stream.getvalue().endswith("from a thread\npending when the loop stops\n")

    asyncio.run(serve())
    logger.info("no loop: written at once")
    assert stream.getvalue().endswith("stops\nno loop: written at once\n")
    handler.close()


class _BrokenStream(io.StringIO):
    broken = True

    def write(self, text: str) -> int:
        if self.broken:
            raise OSError(28, "No space left on device")
        return super().write(text)


def test_a_failing_stream_loses_the_batch_not_the_loop(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    """A write that fails in the loop's flush is reported once (as the stock handler does)
    and the lines dropped; it does not raise into the loop, whose error log would come back
    through this handler and fail again at every iteration."""
    stream = _BrokenStream()
    logger, handler = _logger(stream)
    loop_errors: list[dict[str, object]] = []

    async def serve() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: loop_errors.append(context))
        logger.info("lost 1")
        logger.info("lost 2")
        for _ in range(5):
            await asyncio.sleep(0)
        stream.broken = False
        logger.info("written")
        for _ in range(2):
            await asyncio.sleep(0)

    asyncio.run(serve())
    assert loop_errors == []
    assert stream.getvalue() == "written\n"
    assert capsys.readouterr().err.count("--- Logging error ---") == 1
    handler.close()


def test_a_file_closed_by_its_owner_is_flushed_quietly_unless_lines_are_lost(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`logging.shutdown` flushes every handler still alive at exit, also one whose file its
    owner closed (bench/dhcp/profile_serve.py did: "I/O operation on closed file"). The stock
    handler's ValueError is ignored there; nothing pending is nothing lost."""
    log_file = (tmp_path / "serve.log").open("w")
    logger, handler = _logger(log_file)
    logger.info("written")
    log_file.close()
    handler.flush()
    assert capsys.readouterr().err == ""
    assert (tmp_path / "serve.log").read_text() == "written\n"

    async def serve() -> None:
        logger.info("pending when the file is closed")
        handler.stream.close()

    handler.setStream((tmp_path / "again.log").open("w"))
    asyncio.run(serve())
    handler.flush()
    assert capsys.readouterr().err.count("log lines lost") == 1
    handler.close()
