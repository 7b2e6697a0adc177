"""Operator alerts: one model, published to RabbitMQ, MQTT and signed webhooks (docs/alerts.md)."""
