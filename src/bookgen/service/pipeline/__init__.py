"""The generation pipeline: outline, chapters to length, assembly and export."""
