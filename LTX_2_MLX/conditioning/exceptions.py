class ConditioningError(Exception):
    """A conditioning item does not fit the latent it is applied to."""
