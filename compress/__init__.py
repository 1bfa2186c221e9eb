"""compress: distil, shrink, export and measure BERT-family classifiers."""

__version__ = "0.1.0"
