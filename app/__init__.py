"""Auction timer: configuration, CLI, gateway, clients and process wiring."""
