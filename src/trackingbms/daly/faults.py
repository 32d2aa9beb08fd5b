"""The A5 0x98 fault table (reference §2.1): bit names, readable text, decoding of the 7 flag bytes.

One module so the client, the server and the dashboard map the same names to the same text.
"L1" is Daly's level-1 warning, "L2" the level-2 alarm (protection acts).
"""

from __future__ import annotations

#: (byte, bit) → name; bytes 0–6 of the 0x98 payload, bit 0 = LSB
FAULT_BITS: dict[tuple[int, int], str] = {}

_TABLE: tuple[tuple[str, ...], ...] = (
    (
        "cell_voltage_high_l1",
        "cell_voltage_high_l2",
        "cell_voltage_low_l1",
        "cell_voltage_low_l2",
        "pack_voltage_high_l1",
        "pack_voltage_high_l2",
        "pack_voltage_low_l1",
        "pack_voltage_low_l2",
    ),
    (
        "charge_temp_high_l1",
        "charge_temp_high_l2",
        "charge_temp_low_l1",
        "charge_temp_low_l2",
        "discharge_temp_high_l1",
        "discharge_temp_high_l2",
        "discharge_temp_low_l1",
        "discharge_temp_low_l2",
    ),
    (
        "charge_overcurrent_l1",
        "charge_overcurrent_l2",
        "discharge_overcurrent_l1",
        "discharge_overcurrent_l2",
        "soc_high_l1",
        "soc_high_l2",
        "soc_low_l1",
        "soc_low_l2",
    ),
    ("cell_voltage_diff_l1", "cell_voltage_diff_l2", "temp_diff_l1", "temp_diff_l2", "", "", "", ""),
    (
        "charge_mos_overtemp",
        "discharge_mos_overtemp",
        "charge_mos_temp_sensor_fault",
        "discharge_mos_temp_sensor_fault",
        "charge_mos_adhesion_fault",
        "discharge_mos_adhesion_fault",
        "charge_mos_open_circuit_fault",
        "discharge_mos_open_circuit_fault",
    ),
    (
        "afe_chip_fault",
        "cell_voltage_wire_off",
        "cell_temp_sensor_fault",
        "eeprom_fault",
        "rtc_fault",
        "precharge_failure",
        "external_comm_failure",
        "internal_comm_failure",
    ),
    (
        "current_module_fault",
        "pack_voltage_detect_fault",
        "short_circuit_protection",
        "low_voltage_charge_forbidden",
        "mos_off_by_soft_switch",
        "charging_cabinet_offline",
        "",
        "",
    ),
)

for _byte, _names in enumerate(_TABLE):
    for _bit, _name in enumerate(_names):
        if _name:
            FAULT_BITS[(_byte, _bit)] = _name

#: fault name → readable English text (for tables, alarms, the dashboard)
FAULT_TEXT: dict[str, str] = {
    "cell_voltage_high_l1": "Cell voltage high (warning)",
    "cell_voltage_high_l2": "Cell voltage high (alarm)",
    "cell_voltage_low_l1": "Cell voltage low (warning)",
    "cell_voltage_low_l2": "Cell voltage low (alarm)",
    "pack_voltage_high_l1": "Pack voltage high (warning)",
    "pack_voltage_high_l2": "Pack voltage high (alarm)",
    "pack_voltage_low_l1": "Pack voltage low (warning)",
    "pack_voltage_low_l2": "Pack voltage low (alarm)",
    "charge_temp_high_l1": "Charge temperature high (warning)",
    "charge_temp_high_l2": "Charge temperature high (alarm)",
    "charge_temp_low_l1": "Charge temperature low (warning)",
    "charge_temp_low_l2": "Charge temperature low (alarm)",
    "discharge_temp_high_l1": "Discharge temperature high (warning)",
    "discharge_temp_high_l2": "Discharge temperature high (alarm)",
    "discharge_temp_low_l1": "Discharge temperature low (warning)",
    "discharge_temp_low_l2": "Discharge temperature low (alarm)",
    "charge_overcurrent_l1": "Charge overcurrent (warning)",
    "charge_overcurrent_l2": "Charge overcurrent (alarm)",
    "discharge_overcurrent_l1": "Discharge overcurrent (warning)",
    "discharge_overcurrent_l2": "Discharge overcurrent (alarm)",
    "soc_high_l1": "SOC high (warning)",
    "soc_high_l2": "SOC high (alarm)",
    "soc_low_l1": "SOC low (warning)",
    "soc_low_l2": "SOC low (alarm)",
    "cell_voltage_diff_l1": "Cell voltage difference too large (warning)",
    "cell_voltage_diff_l2": "Cell voltage difference too large (alarm)",
    "temp_diff_l1": "Temperature difference too large (warning)",
    "temp_diff_l2": "Temperature difference too large (alarm)",
    "charge_mos_overtemp": "Charge MOSFET over-temperature",
    "discharge_mos_overtemp": "Discharge MOSFET over-temperature",
    "charge_mos_temp_sensor_fault": "Charge MOSFET temperature sensor fault",
    "discharge_mos_temp_sensor_fault": "Discharge MOSFET temperature sensor fault",
    "charge_mos_adhesion_fault": "Charge MOSFET stuck on (adhesion)",
    "discharge_mos_adhesion_fault": "Discharge MOSFET stuck on (adhesion)",
    "charge_mos_open_circuit_fault": "Charge MOSFET open circuit",
    "discharge_mos_open_circuit_fault": "Discharge MOSFET open circuit",
    "afe_chip_fault": "AFE acquisition chip fault",
    "cell_voltage_wire_off": "Cell voltage sense wire off",
    "cell_temp_sensor_fault": "Cell temperature sensor fault",
    "eeprom_fault": "EEPROM fault",
    "rtc_fault": "RTC fault",
    "precharge_failure": "Precharge failure",
    "external_comm_failure": "External (vehicle) communication failure",
    "internal_comm_failure": "Internal communication module failure",
    "current_module_fault": "Current module fault",
    "pack_voltage_detect_fault": "Pack voltage detection fault",
    "short_circuit_protection": "Short-circuit protection",
    "low_voltage_charge_forbidden": "Charging forbidden at low voltage",
    "mos_off_by_soft_switch": "MOSFET switched off by software",
    "charging_cabinet_offline": "Charging cabinet offline",
}

#: level-2 (protection) faults and hard faults; the rest are warnings
ALARM_FAULTS: frozenset[str] = frozenset(n for n in FAULT_TEXT if n.endswith("_l2") or not n.endswith("_l1"))


def unknown_bit_name(byte: int, bit: int) -> str:
    """Name for a reserved bit that is set anyway: reported, never silently dropped."""
    return f"reserved_byte{byte}_bit{bit}"


def fault_text(name: str) -> str:
    """Readable text for a fault name, including reserved bits."""
    if name in FAULT_TEXT:
        return FAULT_TEXT[name]
    if name.startswith("reserved_byte"):
        return f"Undocumented fault flag ({name.removeprefix('reserved_')})"
    return name.replace("_", " ").capitalize()


def decode_fault_bits(flags: bytes) -> list[str]:
    """Names of the set bits in the first 7 payload bytes of a 0x98 reply, table order."""
    names: list[str] = []
    for byte, value in enumerate(flags[:7]):
        for bit in range(8):
            if value >> bit & 1:
                names.append(FAULT_BITS.get((byte, bit)) or unknown_bit_name(byte, bit))
    return names


def encode_fault_bits(names: list[str] | tuple[str, ...] | set[str]) -> bytes:
    """The 7 flag bytes for a set of fault names (inverse of :func:`decode_fault_bits`)."""
    index = {name: pos for pos, name in FAULT_BITS.items()}
    out = bytearray(7)
    for name in names:
        if name in index:
            byte, bit = index[name]
        elif name.startswith("reserved_byte"):
            b, _, t = name.removeprefix("reserved_byte").partition("_bit")
            byte, bit = int(b), int(t)
        else:
            raise ValueError(f"unknown fault name {name!r}")
        out[byte] |= 1 << bit
    return bytes(out)
