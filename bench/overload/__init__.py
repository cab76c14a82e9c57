"""Overload benchmark: goodput, latency and wasted CPU of four servers past their capacity."""
