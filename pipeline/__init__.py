"""MorphoMass science: importable without Django; ``catalogue.tasks`` and ``catalogue.stages`` bind it to the database."""
