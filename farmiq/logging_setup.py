"""Structured JSON logs (one object per line) with an optional request id and trace id.

Set ``FARMIQ_LOG_FORMAT=text`` for human-readable logs on a terminal.

With JSON logs (the default) every line the process writes is one JSON object, including
what other code writes its own way:

- library loggers that bring their own handlers (MLflow puts its own on ``mlflow``,
  ``alembic`` and ``sqlalchemy.engine``; uvicorn on ``uvicorn*``) are adopted: their
  handlers removed, their records propagated to the one JSON handler on the root logger
  (:func:`adopt_library_loggers`, run again by a daemon once its libraries are imported);
- ``warnings.warn`` goes through logging (``py.warnings``);
- uncaught exceptions (main thread and other threads) are one record with ``exc``;
- in daemons (:func:`capture_std_streams`), anything still written straight to
  ``sys.stdout`` / ``sys.stderr`` (``print``, progress bars, a library's own traceback
  print) is wrapped line by line into a record of logger ``stdout`` / ``stderr``
  (:class:`JsonLineStream`). Output of C code to file descriptor 2 is not seen by Python
  and stays as it is.
"""

from __future__ import annotations

import contextvars
import faulthandler
import io
import logging
import os
import sys
import threading
import time
from types import TracebackType
from typing import Any, TextIO

import orjson

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_STD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()) | {"message", "asctime"}

# Loggers that other libraries configure with handlers of their own.
LIBRARY_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "mlflow",
    "alembic",
    "sqlalchemy.engine",
    "huey",
    "feast",
    "evidently",
)
QUIET_LOGGERS = ("urllib3", "alembic", "botocore", "httpx", "httpcore", "sqlalchemy.engine")

# Set by farmiq tracing when OpenTelemetry is configured: () -> (trace_id, span_id) | None.
trace_ids: Any = None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id.get()
        if rid:
            out["request_id"] = rid
        if trace_ids is not None:
            ids = trace_ids()
            if ids is not None:
                out["trace_id"], out["span_id"] = ids
        for key, value in record.__dict__.items():
            if key not in _STD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class JsonLineStream(io.TextIOBase):
    """Stands in for ``sys.stdout`` / ``sys.stderr``: each line written is logged as one
    record of logger ``name`` (a line that is already a JSON object passes as it is).
    Carriage returns (progress bars redrawing a line) end a line too; empty ones are
    dropped."""

    def __init__(self, name: str, level: int, raw: TextIO) -> None:
        self.name = name
        self.level = level
        self.raw = raw
        self._buf = ""
        self._lock = threading.Lock()
        self._local = threading.local()
        self._log = logging.getLogger(name)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.raw.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.raw, "encoding", "utf-8")

    def write(self, s: str) -> int:
        with self._lock:
            self._buf += s.replace("\r\n", "\n").replace("\r", "\n")
            if "\n" not in self._buf:
                return len(s)
            *lines, self._buf = self._buf.split("\n")
        for line in lines:
            self._emit(line)
        return len(s)

    def _emit(self, line: str) -> None:
        if not line.strip():
            return
        if line.startswith("{") and line.endswith("}"):
            try:
                orjson.loads(line)
                self.raw.write(line + "\n")
                self.raw.flush()
                return
            except orjson.JSONDecodeError:
                pass
        if getattr(self._local, "busy", False):  # logging itself failed and wrote here
            rec = {"ts": round(time.time(), 3), "level": "error", "logger": self.name, "msg": line}
            self.raw.write(orjson.dumps(rec).decode() + "\n")
            return
        self._local.busy = True
        try:
            self._log.log(self.level, line)
        finally:
            self._local.busy = False

    def flush(self) -> None:
        self.raw.flush()

    def close_line(self) -> None:
        with self._lock:
            rest, self._buf = self._buf, ""
        self._emit(rest)


def adopt_library_loggers() -> None:
    """Send the records of libraries that installed their own handlers to the root one."""
    if not _json_on():
        return
    for name in LIBRARY_LOGGERS:
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _json_on() -> bool:
    return os.environ.get("FARMIQ_LOG_FORMAT", "json") != "text"


def _excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    logging.getLogger("farmiq.uncaught").critical(
        "uncaught %s: %s", kind.__name__, value, exc_info=(kind, value, tb)
    )


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("farmiq.uncaught").error(
        "uncaught %s in thread %s: %s",
        args.exc_type.__name__,
        name,
        args.exc_value,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]
    )


def configure_logging(level: str = "INFO") -> None:
    if not _json_on():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.Formatter.converter = time.gmtime
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(level.upper())
        for noisy in QUIET_LOGGERS:
            logging.getLogger(noisy).setLevel(logging.WARNING)
        return
    # Libraries imported after this read these: MLflow leaves logging alone, no bars.
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")
    handler = logging.StreamHandler(sys.__stderr__ or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    adopt_library_loggers()
    logging.captureWarnings(True)
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook


def capture_native_stderr() -> None:
    """For daemons with JSON logs: what native libraries write straight to file descriptor
    2 (LiteRT's "Created TensorFlow Lite XNNPACK delegate", ONNX Runtime's warnings) becomes
    records of logger ``stderr`` too. fd 2 is pointed at a pipe a thread reads; the log
    handler and Python's fatal-error handler write to a duplicate of the original fd, so
    a crash report still reaches the journal."""
    global _native_captured
    if not _json_on() or _native_captured:
        return
    try:
        saved = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
    except OSError:
        return
    _native_captured = True
    raw = os.fdopen(saved, "w", buffering=1, encoding="utf-8", errors="replace")
    faulthandler.enable(file=raw)
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.StreamHandler):
            h.setStream(raw)
    if isinstance(sys.stderr, JsonLineStream):
        sys.stderr.raw = raw
    stream = JsonLineStream("stderr", logging.WARNING, raw)

    def pump() -> None:
        with os.fdopen(read_fd, "r", encoding="utf-8", errors="replace") as pipe:
            for line in pipe:
                stream.write(line)

    threading.Thread(target=pump, name="native-stderr", daemon=True).start()


_native_captured = False


def capture_std_streams() -> None:
    """For daemons (not CLI commands, whose stdout is their output): with JSON logs, wrap
    ``sys.stdout`` and ``sys.stderr`` so that every line written there is a JSON record."""
    if not _json_on():
        return
    if not isinstance(sys.stdout, JsonLineStream):
        sys.stdout = JsonLineStream("stdout", logging.INFO, sys.__stdout__ or sys.stdout)
    if not isinstance(sys.stderr, JsonLineStream):
        sys.stderr = JsonLineStream("stderr", logging.WARNING, sys.__stderr__ or sys.stderr)
