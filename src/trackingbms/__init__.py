"""TrackingBMS: track fleets of Daly BMS battery packs, from the BMS wire to a multi-tenant server."""

__version__ = "0.1.0"
