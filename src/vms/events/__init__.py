"""Events: the model, the in-process bus, and the catalog's events and motion tables."""
