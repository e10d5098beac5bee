"""The pages, one module per area: surveys, galaxies, models, runs, predict, adql, and the service's own.

Each view asks the selectors (and, for files, the writers and pictures services) and renders;
no view queries the database itself.
"""
