"""The web app: pages, the DIGITS-compatible JSON API and the live event stream."""
