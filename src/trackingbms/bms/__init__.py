"""BMS clients behind one interface (:class:`BmsClient`), one module per family, registered by name.

    bms = await open_bms("/dev/ttyUSB0", family="a5", address=0x40)
    reading = await bms.snapshot()          # trackingbms.model.Reading, partial with .errors
    await bms.aclose()

=============  ==========================================  ============================
family         protocol                                    module
=============  ==========================================  ============================
``a5``         legacy A5 frames (UART, RS485, TCP, BLE)    :mod:`trackingbms.bms.a5`
``d2``         D2 Modbus-style (RS485, TCP, BLE)           :mod:`trackingbms.bms.d2`
``p81``        0x81 Modbus-style, boards 1–16 (RS485)      :mod:`trackingbms.bms.p81`
``a5-can``     legacy Daly CAN (A5 payloads)               :mod:`trackingbms.bms.a5_can`
``hkms-can``   H/K/M/S CAN broadcast (experimental)        :mod:`trackingbms.bms.hkms_can`
=============  ==========================================  ============================

The gateway reaches the BMS through this package only (design.md layers): it re-exports what the
gateway needs from the links.
"""

from trackingbms.bms.a5 import DalyBMS
from trackingbms.bms.base import (
    FAMILIES,
    GROUPS,
    BmsClient,
    BmsCorrupt,
    BmsError,
    BmsNoReply,
    BmsWriteError,
    LinkStats,
    MosFet,
    UnknownFamily,
    error_from,
    family_class,
    open_bms,
    run_exchange,
)
from trackingbms.daly.poll import COMMAND_BY_ID, COMMANDS, SNAPSHOT_ORDER
from trackingbms.daly.records import MultiFrame
from trackingbms.links import LinkError, open_link

__all__ = [
    "COMMANDS",
    "COMMAND_BY_ID",
    "FAMILIES",
    "GROUPS",
    "SNAPSHOT_ORDER",
    "BmsClient",
    "BmsCorrupt",
    "BmsError",
    "BmsNoReply",
    "BmsWriteError",
    "DalyBMS",
    "LinkError",
    "LinkStats",
    "MosFet",
    "MultiFrame",
    "UnknownFamily",
    "error_from",
    "family_class",
    "open_bms",
    "open_link",
    "run_exchange",
]
