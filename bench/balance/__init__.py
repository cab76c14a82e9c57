"""bench/balance: rpckit's P2C client against grpcio's round_robin and random picks."""
