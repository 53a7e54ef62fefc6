"""A lean fan-out throughput generator (asyncio + websockets on uvloop), in the spirit of wrk.

``python -m loadtests.fanout --host URL ...`` fills a few chat rooms with members, then sends
messages at a rate raised step by step, and writes one JSON result: per step the offered rate, the
deliveries received per second, the delivery latency percentiles and every failure. Locust fires
one event per delivery and tops out far below the deliveries/s a server reaches on the same cores.
"""
