"""From a cutout to what the networks and the models read: star removal, log scaling, photometry,
the g - i colour map, and the pictures the pages show (the paper's Sect. 2.2)."""
