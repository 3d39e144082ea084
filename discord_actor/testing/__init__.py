"""Test helpers for discord-actor and for projects that write actors.

The pytest plugin (``discord_actor.testing.plugin``) is registered through the ``pytest11``
entry point, so its fixtures are available without any import: ``database_url``,
``db_schema``, ``db_config`` and ``database`` give each test a real PostgreSQL schema, on one
server shared by the test session. Run ``pytest --fixtures`` to see them all.
"""
