"""The gateway's feature cache (SQLite): raw readings, windowed aggregates, cloud features."""
