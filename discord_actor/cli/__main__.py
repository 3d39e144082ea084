"""``python -m discord_actor.cli``: the ``discord-actor`` command."""

import sys

from discord_actor.cli.main import main

if __name__ == "__main__":  # importing this module (the package's own checks do) runs nothing
    sys.exit(main())
