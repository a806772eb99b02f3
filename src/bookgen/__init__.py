"""BookGen: biographies written by an LLM, measured end to end."""

__version__ = "0.1.0"
