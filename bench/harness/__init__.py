"""Benchmark harness shared by the benchmarks in `bench/`.

- `loadgen`: open-loop Poisson load (gRPC and HTTP/JSON) from sender processes;
- `stats`: pure summaries of the per-request records (goodput, percentiles, rejections);
- `procs`: start/stop a system under test, process-tree CPU time and PSS from /proc;
- `report`: markdown table and PNG plot of a run.
"""
