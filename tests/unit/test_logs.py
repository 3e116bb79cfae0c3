"""JSON log lines: one object per line with the call's extra fields, no stack trace."""

from __future__ import annotations

import io
import json
import logging

from graph.logs import JsonFormatter, configure_logging


def test_json_lines_carry_message_level_and_extra_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("tests.logs")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("GET %s %d", "/graphql", 200, extra={"route": "/graphql", "latency_ms": 3.5})
        try:
            raise ValueError("bad value")
        except ValueError:
            log.exception("it failed")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "GET /graphql 200" and first["level"] == "WARNING"
    assert (first["logger"], first["route"], first["latency_ms"]) == ("tests.logs", "/graphql",
                                                                      3.5)
    assert first["ts"].endswith("+00:00")
    assert second["error"] == "ValueError: bad value"
    assert "Traceback" not in stream.getvalue()


def test_configure_logging_installs_one_handler() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("json", logging.INFO)
        configure_logging("json", logging.INFO)
        assert len(root.handlers) == 1
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        configure_logging("text")
        assert not isinstance(root.handlers[0].formatter, JsonFormatter)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
