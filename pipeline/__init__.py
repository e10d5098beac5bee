"""MorphoMass science: importable without Django (only ``pipeline.tasks`` binds it)."""
