"""Issue 20: the structured log skips the caller lookup through a public hook
(``logging.setLoggerClass`` with a ``findCaller`` override), not ``logging._srcfile``."""

from __future__ import annotations

import logging

from realtime.ops.structured_logging import NoCallerLogger


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_project_loggers_skip_the_stack_walk_but_keep_stack_info() -> None:
    logger = logging.getLogger("realtime.server")
    assert isinstance(logger, NoCallerLogger)
    capture = Capture()
    logger.addHandler(capture)
    try:
        logger.warning("plain")
        logger.warning("with stack", stack_info=True)
    finally:
        logger.removeHandler(capture)
    plain, stacked = capture.records
    assert (plain.filename, plain.lineno, plain.funcName) == ("(unknown file)", 0, "(unknown function)")
    assert stacked.stack_info is not None
    assert "test_project_loggers_skip_the_stack_walk_but_keep_stack_info" in stacked.stack_info
    assert stacked.funcName == "test_project_loggers_skip_the_stack_walk_but_keep_stack_info"
