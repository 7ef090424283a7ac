"""``python -m hybrid`` runs the command line."""

from .cli import main

main()
