"""The agent's link to the cloud: the MQTT connection and the durable outbox."""
