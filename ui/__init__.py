"""The pairstack dashboard: a Panel directory app served by ``panel serve ui/``."""
