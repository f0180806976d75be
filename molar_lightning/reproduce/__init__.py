"""``molar reproduce``: the paper's tables rerun from the shipped configs, over seeds, with paired tests.

:mod:`.tables` reads the rows and the paper's figures (``paper_tables.yaml``), :mod:`.profiles` says how a row
is run on the hardware at hand, :mod:`.runs` fits and tests one row for one seed, :mod:`.statistics` holds the
tests, and :mod:`.summary` writes the table, the CSV and the plots; :mod:`.command` is the command line.
"""
