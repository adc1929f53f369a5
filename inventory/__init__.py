"""Keep a live SQL copy of a DigitalOcean account's images and image actions."""

__version__ = "0.1.0"
