"""The HTTP side of a runtime: health and readiness, Prometheus metrics, a JSON API and a
server-rendered dashboard, all on one aiohttp server (``[http]`` in the configuration).

Layered one way: ``server`` (the server, the probes, ``/metrics``) → ``api`` and ``dashboard``
(the two front ends over ``operations``) → ``actions`` (pause, resume, trigger, for both) →
``site`` (what every handler reads) → ``auth`` (who may do what) and ``access`` (whether
``[http]`` may start at all).
"""
