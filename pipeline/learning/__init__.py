"""From features to M/L: the named models and their regressors (LightGBM, power law, constant), the
learning data, intervals, support, model selection, metrics, the paper's experiments and their
significance (the paper's Sects. 2.4-4)."""
