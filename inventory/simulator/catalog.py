"""Static, real-looking DigitalOcean values the generator draws from.

Region slugs and names, public distribution and application slugs, and the
words used for private image names and tags.
"""

from __future__ import annotations

from typing import Any

REGIONS: dict[str, tuple[str, bool]] = {
    "nyc1": ("New York 1", True),
    "nyc2": ("New York 2", True),
    "nyc3": ("New York 3", True),
    "ams2": ("Amsterdam 2", False),
    "ams3": ("Amsterdam 3", True),
    "sfo1": ("San Francisco 1", False),
    "sfo2": ("San Francisco 2", True),
    "sfo3": ("San Francisco 3", True),
    "sgp1": ("Singapore 1", True),
    "lon1": ("London 1", True),
    "fra1": ("Frankfurt 1", True),
    "tor1": ("Toronto 1", True),
    "blr1": ("Bangalore 1", True),
    "syd1": ("Sydney 1", True),
    "atl1": ("Atlanta 1", True),
}
REGION_SLUGS = tuple(REGIONS)

SIZES = (
    "s-1vcpu-1gb",
    "s-1vcpu-2gb",
    "s-2vcpu-2gb",
    "s-2vcpu-4gb",
    "s-4vcpu-8gb",
    "c-2vcpu-4gb",
    "m-2vcpu-16gb",
)
FEATURES = (
    "private_networking",
    "backups",
    "ipv6",
    "metadata",
    "install_agent",
    "storage",
    "image_transfer",
)

# Public distribution images: (distribution, slug stem, versions, name format).
DISTRIBUTIONS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("Ubuntu", "ubuntu", ("20-04", "22-04", "24-04", "24-10", "25-04"), "{} x64"),
    ("Debian", "debian", ("11", "12", "13"), "{} x64"),
    ("Fedora", "fedora", ("40", "41", "42"), "{} x64"),
    ("CentOS", "centos-stream", ("9", "10"), "Stream {} x64"),
    ("Rocky Linux", "rockylinux", ("8", "9", "10"), "{} x64"),
    ("AlmaLinux", "almalinux", ("8", "9"), "{} x64"),
    ("FreeBSD", "freebsd", ("13", "14"), "{} x64 zfs"),
)
DISTRIBUTION_PREFIXES = tuple(stem for _, stem, _, _ in DISTRIBUTIONS) + (
    "arch",
    "coreos",
    "rancheros",
    "opensuse",
    "gentoo",
)
APPLICATIONS = (
    "docker",
    "wordpress",
    "lamp",
    "lemp",
    "mysql",
    "mongodb",
    "nodejs",
    "django",
    "gitlab",
    "openlitespeed-wp",
)
APPLICATION_BASES = ("20-04", "22-04", "24-04")

PRIVATE_DISTRIBUTIONS = (
    "Ubuntu",
    "Ubuntu",
    "Debian",
    "Fedora",
    "CentOS",
    "Rocky Linux",
    "Arch Linux",
    "FreeBSD",
    "Unknown",
)
HOSTS = ("web", "db", "cache", "worker", "api", "lb", "build", "vpn")
TAGS = ("prod", "staging", "base-image", "web", "db", "simple-image", "golden")
DESCRIPTIONS = (
    "Cloud-optimized image w/ small footprint",
    "Nightly golden image",
    "Hardened base",
)
DROPLET_ACTION_TYPES = ("create", "power_on", "power_off", "reboot", "resize")


def region_object(slug: str) -> dict[str, Any]:
    """The full region object DigitalOcean embeds in an action."""
    name, available = REGIONS.get(slug, (slug.upper(), True))
    return {
        "name": name,
        "slug": slug,
        "sizes": list(SIZES),
        "features": list(FEATURES),
        "available": available,
    }
