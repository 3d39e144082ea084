"""The package's version, in a module of its own so that ``discord-actor --version`` reads it
without the package root (which re-exports it as ``discord_actor.__version__``)."""

__version__ = "0.1.0"
