"""rpckit's test suite."""
