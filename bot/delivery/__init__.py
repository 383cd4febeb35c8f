"""Outbound messages: the outbox (write side, in handler transactions) and the dispatcher (send side)."""
