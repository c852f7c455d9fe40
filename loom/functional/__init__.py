"""The maths of loom's methods as plain functions, usable in any training loop.

This package imports torch and nothing else of loom.
"""

from loom.functional.cross_entropy import cross_entropy, soft_cross_entropy

__all__ = ["cross_entropy", "soft_cross_entropy"]
