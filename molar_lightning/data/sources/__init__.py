"""One module per raw data format; each reads its files into a :class:`RawInteractions`."""
