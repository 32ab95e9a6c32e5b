"""MovieLens data: sources, parsers, splits and sparse rows."""
