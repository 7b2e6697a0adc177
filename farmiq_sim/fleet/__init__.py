"""Fleet simulator: many lightweight gateways in one asyncio process (``farmiq fleet simulate``)."""
