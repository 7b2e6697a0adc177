"""The agent's local HTTP API: a bare ASGI app (``local_api``) and its routes."""
