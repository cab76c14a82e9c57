"""bench/overhead: what rpckit itself costs per call, against a plain grpcio server.

A trivial handler (no CPU, no wait), closed loop, `rpckit serve` (1 process, defaults) vs
``grpc.server(ThreadPoolExecutor(8))``, measured in alternating rounds; the client is h2load
(C, so its own cost does not dominate), with a Python grpcio client row for comparison.
"""
