"""``python -m discord_actor.cli``: the ``discord-actor`` command."""

import sys

from discord_actor.cli.main import main

sys.exit(main())
