"""rpckit: typed, load-aware gRPC services for teams leaving JSON-over-HTTP."""
