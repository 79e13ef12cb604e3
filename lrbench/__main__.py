"""``python -m lrbench`` = the ``lrbench`` command."""

from .cli import main

main()
