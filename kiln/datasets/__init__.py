"""Datasets: sources (folder, text lists), image loading and resizing, packing, reading."""
