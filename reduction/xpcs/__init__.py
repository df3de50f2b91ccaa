"""X-ray photon correlation spectroscopy (``reduction=xpcs``): multi-tau g2 and two-time correlation
of whole scans, merged into NXxpcs entries (docs/xpcs.md)."""
