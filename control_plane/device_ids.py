"""The device-id type of request bodies: an id that can name a gateway's MQTT topics.

A request naming a device whose id no topic can carry (control characters, '/', '+', '#',
longer than the database columns) is refused with a 422 that says why, before anything is
built, stored or published (see ``farmiq.topics.check_device_id``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from farmiq import topics

DeviceId = Annotated[
    str,
    Field(min_length=1, max_length=topics.MAX_DEVICE_ID, examples=["gw-barn-01"]),
    AfterValidator(topics.check_device_id),
]
