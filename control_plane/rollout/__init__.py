"""Fleet rollouts: device registry, staged waves gated on health, chunked transfers."""
