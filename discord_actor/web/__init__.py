"""The HTTP side of a runtime: health and readiness, Prometheus metrics, a JSON API and a
server-rendered dashboard, all on one aiohttp server (``[http]`` in the configuration).

``server`` owns the server and the probes, ``auth`` who may do what, ``api`` and ``dashboard``
the two front ends over ``operations``.
"""
