"""``python -m molar_lightning ...`` is the ``molar`` command."""

from molar_lightning.commands import main

main()
