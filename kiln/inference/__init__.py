"""Inference: the predictor shared by classify one/many, and later visualisations and export."""
