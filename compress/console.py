"""What a user sees: one result line per stage and progress bars for long work, by default.

Libraries print notes that are known to be harmless here (the ONNX tracer's, ORT's advice to
pre-process, its failed head detection where unfused attention is intended). They are silenced
where they arise, and `compress --verbose` lets everything through.
"""

from __future__ import annotations

import contextlib
import logging
import warnings

verbose = False  # set by `compress --verbose`


class _DropMessages(logging.Filter):
    def __init__(self, fragments: tuple[str, ...]):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(fragment in record.getMessage() for fragment in self.fragments)


@contextlib.contextmanager
def hushed(categories: tuple[type[Warning], ...] = (), messages: tuple[str, ...] = (),
           loggers: tuple[str, ...] = (), log_messages: tuple[str, ...] = ()):
    """Within the block, drop warnings of `categories` or whose text starts with one of `messages`, and
    lines of the named `loggers` ("" is the root) that contain one of `log_messages`; not with --verbose."""
    if verbose:
        yield
        return
    drop = _DropMessages(log_messages)
    with warnings.catch_warnings():
        for category in categories:
            warnings.simplefilter("ignore", category)
        for message in messages:
            warnings.filterwarnings("ignore", message=message)
        for name in loggers:
            logging.getLogger(name).addFilter(drop)
        try:
            yield
        finally:
            for name in loggers:
                logging.getLogger(name).removeFilter(drop)
