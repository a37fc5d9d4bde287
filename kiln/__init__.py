"""kiln: train image classifiers in the browser, the DIGITS way, on PyTorch."""

__version__ = "0.1.0"
