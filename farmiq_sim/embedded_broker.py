"""An embedded MQTT broker for the demo on machines without Mosquitto.

amqtt is pure Python, speaks MQTT 3.1.1 only, is 2-4x slower than Mosquitto and has no
shared subscriptions (see ../shared/NOTES.md): good enough to run the demo, never a
production broker. Run as ``python -m farmiq_sim.embedded_broker --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging


async def serve(host: str, port: int) -> None:
    from amqtt.broker import Broker

    # Built inside the running loop, as amqtt requires.
    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
    )
    await broker.start()
    try:
        await asyncio.Event().wait()
    finally:
        await broker.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
