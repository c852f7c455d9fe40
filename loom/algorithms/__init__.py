"""Training methods as plugins, one folder each: the class and its method card."""

__all__: list[str] = []
