"""The fault table's readable texts, re-exported so the gateway reaches them through ``trackingbms.bms``
(design.md's layers: the gateway imports bms and model only)."""

from trackingbms.daly.faults import ALARM_FAULTS, fault_text

__all__ = ["ALARM_FAULTS", "fault_text"]
