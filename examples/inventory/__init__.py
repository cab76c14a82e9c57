"""The worked example: an inventory service as plain grpcio servicers, served by rpckit."""
