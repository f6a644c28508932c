"""The Python countdown client: the algorithm (pure), the connection (async), and `watch`."""
