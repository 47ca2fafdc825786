"""``python -m roost.cli``: the ``roost`` command."""

from roost.cli.main import main

main()
