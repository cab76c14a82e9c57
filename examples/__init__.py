"""Runnable examples of rpckit services."""
