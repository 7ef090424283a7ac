"""The version of hybrid, in a module of its own so that every other module can read it without importing
the package's public face (which imports the searcher, and so nearly everything)."""

__version__ = "0.1.0"
