"""The old import path of the report blocks; they moved to :mod:`closedloop.core.blocks` (the stage
contract speaks them, so they sit beside it). Kept so that user stages written against it still work."""

from closedloop.core.blocks import Block, Callout, Figure, Html, KeyValues, Paragraph, Section, Table

__all__ = ["Block", "Callout", "Figure", "Html", "KeyValues", "Paragraph", "Section", "Table"]
