"""The aiohttp gateway: REST hydration and sync, WebSocket fan-out, the countdown page."""
