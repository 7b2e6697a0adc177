"""Every outgoing webhook is signed: the retraining hook's POST, checked by a real HTTP
receiver; without a secret nothing is sent unsigned."""

from __future__ import annotations

import json
import time

from control_plane.drift.trigger import WebhookHook, hook_from_config
from tests.alerts.conftest import WebhookReceiver
from tests.alerts.test_alert_journey import receiver_check


def test_retraining_webhook_is_signed_over_timestamp_and_body(receiver: WebhookReceiver) -> None:
    hook = hook_from_config({"webhook": receiver.url, "secret": "train-secret"})
    assert isinstance(hook, WebhookHook)
    res = hook({"model": "barn", "id": 7, "reasons": ["drift"]})
    assert res["ok"] and res["status"] == 204
    ((headers, body),) = receiver.wait(1)
    assert json.loads(body) == {"model": "barn", "id": 7, "reasons": ["drift"]}
    assert receiver_check("train-secret", headers, body, time.time())
    # A replay ten minutes later fails the receiver's timestamp check.
    assert not receiver_check("train-secret", headers, body, time.time() + 600)


def test_a_webhook_without_a_secret_is_not_sent(receiver: WebhookReceiver) -> None:
    res = WebhookHook(receiver.url)({"model": "barn"})
    assert not res["ok"] and "secret" in res["error"]
    time.sleep(0.3)
    assert receiver.received == []
