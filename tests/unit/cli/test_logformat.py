"""`oneroot serve`'s log formatter writes what the stock formatter writes."""

from __future__ import annotations

import logging
import sys

from oneroot.cli.logformat import LOG_FORMAT, ServeFormatter


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
