"""The rules engine adapter: the only package that imports durable-rules."""

from cds.engine.durable_adapter import Engine, Match

__all__ = ["Engine", "Match"]
