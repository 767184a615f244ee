"""The log line format of `oneroot serve`, and a formatter and handler that write it cheaply.

`serve` logs a line per DHCP reply at info. The stock `Formatter` spends as much on each
line's timestamp (`time.localtime` + `strftime`) as on the rest of the line, so this one
formats the date and time once per second and, for a record without exception or stack text,
joins the three fields directly. The output is the stock formatter's, byte for byte (a test
compares them). The stock `StreamHandler` writes and flushes each line (a `write` system call
per DHCP reply); `LoopBatchingHandler` writes the lines logged on the event loop's thread once
per loop iteration, in order, and the lines of other threads at once (after what is pending).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TextIO

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


class ServeFormatter(logging.Formatter):
    """`LOG_FORMAT`, with the text of the current second cached."""

    def __init__(self) -> None:
        super().__init__(LOG_FORMAT)
        self._second = -1
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:  # the handler's lock is held: no race on the cache
            self._second_text = time.strftime(self.default_time_format,
                                              self.converter(record.created))
            self._second = second
        return f"{self._second_text},{int(record.msecs):03d}"  # the stock msec format

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        record.message = record.getMessage()
        record.asctime = self.formatTime(record)
        return f"{record.asctime} {record.levelname} {record.message}"


_LINES_LOST = logging.LogRecord("oneroot.cli.logformat", logging.ERROR, __file__, 0,
                                "log lines lost: writing them to the log stream failed",
                                None, None)


class LoopBatchingHandler(logging.StreamHandler[TextIO]):
    """A `StreamHandler` whose lines from the running event loop's thread are written together
    at the end of the loop's current iteration (a batch of DHCP replies: one write). Lines
    from other threads, or with no loop running, are written at once, after the pending ones.
    `flush()` (also run by `logging.shutdown` at exit) writes whatever is pending."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._pending: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            loop = asyncio._get_running_loop()
            if loop is None:
                self._pending.append(line)
                self._write_pending()
                return
            if not self._pending:
                loop.call_soon(self.flush)
            self._pending.append(line)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.acquire()
        try:
            if not self._pending and getattr(self.stream, "closed", False):
                return  # closed by its owner, nothing lost (`logging.shutdown` at exit)
            self._write_pending()
        except Exception:
            # As the stock emit() does: say so on stderr, drop the lines, keep serving. Raised
            # in the loop's callback, it would be logged through this handler again, failing
            # again, at every iteration.
            self.handleError(_LINES_LOST)
        finally:
            self.release()

    def _write_pending(self) -> None:
        """Under the handler's lock."""
        if self._pending:
            lines, self._pending = self._pending, []
            self.stream.write(self.terminator.join(lines) + self.terminator)
        if self.stream and hasattr(self.stream, "flush"):
            self.stream.flush()


def configure_logging(level: str, stream: TextIO) -> None:
    """Serve's logging: `LOG_FORMAT` at `level` to `stream`, through the handler and
    formatter above."""
    handler = LoopBatchingHandler(stream)
    handler.setFormatter(ServeFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler])
    # The format names no caller, thread or process: skip collecting them for every record
    # (the logging HOWTO's "Optimization"; serve logs a line per DHCP reply at info).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
