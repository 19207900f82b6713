"""Building blocks shared by two or more fmhl-ops services, one job per package."""
