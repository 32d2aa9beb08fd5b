"""The gateway's Bluetooth LE service for phones and laptops beside the pack (docs/ble.md).

- :mod:`.codec`: the payload format, sans-I/O (encode / decode both directions, fragments);
- :mod:`.pairing`: the pairing code that guards configuration commands;
- :mod:`.service`: the GATT peripheral on bumble (imported only when ``[ble]`` is enabled);
- :mod:`.central`: the client side (``trackingbms direct ble://…``), on bumble or bleak.

Nothing here imports bumble or bleak at module level: the gateway without ``[ble]`` never loads them.
"""
