"""bench/soak: a minute at 80% of capacity through the balanced client, with backend restarts
and a burst; every call accounted for, and RSS over time (``python -m bench.soak``)."""
