"""Uplinks: one policy (:mod:`.policy`) over interchangeable transports (:mod:`.http`, :mod:`.mqtt`)."""

from trackingbms.gateway.uplinks.policy import RemoteConfig, Uplink, UplinkManager

__all__ = ["RemoteConfig", "Uplink", "UplinkManager"]
