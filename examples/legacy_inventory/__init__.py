"""The legacy Flask inventory service that rpckit's migration example starts from."""
