"""Alerts POSTed to webhooks, each signed with HMAC-SHA256 over ``<timestamp>.<body>``.

The signature and timestamp headers come from control_plane/security/webhooks.py (the
receiver's check is in docs/security.md). Deliveries run on one daemon thread with a small
in-memory queue and three tries (1 s, then 4 s apart), so an alert source never waits for
a slow receiver. The durable path for alerts is RabbitMQ; webhooks are best effort.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import httpx

from control_plane.security.webhooks import sign_webhook

log = logging.getLogger(__name__)

RETRY_DELAYS_S = (1.0, 4.0)


def post_signed(
    client: httpx.Client, url: str, secret: str, body: bytes, extra: dict[str, str] | None = None
) -> httpx.Response:
    headers = {"Content-Type": "application/json", **(extra or {}), **sign_webhook(secret, body)}
    return client.post(url, content=body, headers=headers)


class WebhookSender:
    def __init__(self, url: str, secret: str, timeout_s: float = 5.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"alert webhook URL must be http(s): {url!r}")
        if not secret:
            raise ValueError("alert webhook needs a signing secret")
        self.url = url
        self.secret = secret
        self.delivered = 0
        self._client = httpx.Client(timeout=timeout_s)
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=1000)
        self._thread = threading.Thread(target=self._run, name="alerts-webhook", daemon=True)
        self._thread.start()

    def send(self, body: bytes) -> bool:
        try:
            self._queue.put_nowait(body)
            return True
        except queue.Full:
            log.error("alert webhook queue full; alert not sent to %s", self.url)
            return False

    def _deliver(self, body: bytes) -> bool:
        for delay in (0.0, *RETRY_DELAYS_S):
            if delay:
                time.sleep(delay)
            try:
                r = post_signed(self._client, self.url, self.secret, body)
                if r.is_success:
                    return True
                why = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                why = type(exc).__name__
            log.warning("alert webhook %s failed: %s", self.url, why)
        return False

    def _run(self) -> None:
        while True:
            body = self._queue.get()
            if body is None:
                return
            if self._deliver(body):
                self.delivered += 1
            self._queue.task_done()

    def flush(self, timeout: float = 10.0) -> None:
        deadline = time.time() + timeout
        while self._queue.unfinished_tasks and time.time() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(2.0)
        self._client.close()
