"""rpckit benchmarks: side-by-side runs that back the README claims."""
