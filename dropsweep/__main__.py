"""``python -m dropsweep`` is the ``dropsweep`` command."""

from dropsweep.cli import command_line

command_line()
