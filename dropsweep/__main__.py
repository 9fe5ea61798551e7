"""``python -m dropsweep`` is the ``dropsweep`` command."""

from dropsweep.cli import run

run()
