"""Virtual Daly packs: battery physics behind the real A5 protocol, on TCP and ptys (the far end of links).

Public API (stable)::

    from trackingbms.sim import PackConfig, Quirks, SimulatedPack, serve_tcp, serve_pty

    pack = SimulatedPack(
        PackConfig(cells=16, sensors=4, chemistry="lfp", capacity_ah=100, soc_pct=60, seed=1,
                   scenario="idle", speed=1.0),
        Quirks(baud=9600, latency_s=0.06),
    )
    srv = await serve_tcp(pack, host="127.0.0.1", port=0)   # srv.url == "tcp://127.0.0.1:PORT"
    pty = await serve_pty(pack, link=None)                  # pty.path == "/dev/pts/N" (or the link)
    ...
    await srv.close(); await pty.close()

    pack.truth()         # ground truth dict: soc_pct, bms_soc_pct, capacity_ah, per-cell soc /
                         # capacity / resistance / self-discharge / voltage, temps_c, current_a, faults ...
    pack.advance(86400)  # jump simulated time a day ahead (computed at once, ~1 s)
    pack.wake()          # press the wake button of a sleeping BMS

Time: a pack's simulated time is ``clock.now() + advanced``; the default clock runs at
``PackConfig.speed`` × real time. Pass ``clock=ManualClock()`` to stop time except for ``advance``.
Physics moves in fixed steps of ``PackConfig.step_s`` (5 s simulated), computed when someone looks, so
a run does not depend on how often it is polled.
Current sign inside the simulator and in ``truth()``: positive = charging. On the wire the A5
convention applies (raw above 30000 = discharging) unless ``Quirks(invert_current=True)``.

Several packs on one shared RS485 line: ``serve_tcp([pack1, pack2])`` (or ``Bus([...])``) where the packs
have distinct ``Quirks(board=N)``; host address 0x40 + N - 1 reaches board N, replies carry N.

PackConfig (battery): pack_id, cells 3–48, sensors 1–16, chemistry lfp|nmc|lto, capacity_ah, soc_pct,
seed, scenario (idle, constant [constant_current_a], solar-day, ebike-ride, charge-full, ups,
schedule [schedule=path.toml|.csv, or bundled "workshop-day" / "pulse-test"]), speed, start (datetime
of t=0), ambient_c, spreads (capacity, resistance, SOC; self_discharge_spread_pct: healthy cells within
2σ of it), ageing (capacity_fade_pct, fade_per_cycle_pct, resistance_growth_pct, weak_cell,
weak_cell_self_discharge_x or weak_cell_extra_self_discharge_pct_month over the pack's median cell),
cycles, BMS current-sensor error (the reported SOC drifts; currents < soc_count_threshold_a=2.5 A are
not counted), thresholds (cell_ov_mv, cell_uv_mv, charge_oc_a, discharge_oc_a as (L1, L2)).

Quirks (wire): board, hosts "both"|"0x40"|"0x80", frames "auto"|"needed"|"all" (0x95/0x96 count;
auto = needed frames for host 0x40, all 16 cell frames and one extra temperature frame for host 0x80,
as real captures show), stale_bytes (reserved bytes carry the previous reply's), stale_cell_slots,
heartbeat (0x93 byte 3), latency_s, latency_jitter_s, baud (replies wait the request's wire time, then
latency, then 13.5 ms per frame at 9600; 0 = no pacing), sleep_after_s (simulated seconds without
current, then silent or echoing the request), echo_when_asleep, wake_on_request, loss (frames of
multi-frame bursts lose their tail) / bad_checksum / garbage (probabilities per frame / reply),
invert_current, max_request_bytes (bigger chunks are ignored whole).
``parse_faults("loss=0.01,sleep_after=3600")`` builds Quirks from the CLI's ``--faults`` text.

Ground truth over HTTP: ``await serve_truth(packs, port=0)`` → ``GET /truth`` and ``/truth/<id>``;
or ``write_truth_file(packs, path)``. ``pack.stats`` counts requests, replies, echoes, ignored;
``pack.replies_by_id`` / ``pack.repeats_by_id`` count replies per command and client retries among them.

Sans-I/O core: :class:`SimulatedPack.respond` takes one 13-byte request and returns
:class:`Emission` (delay_s, bytes) items; :class:`RequestParser` cuts a byte stream into requests.
"""

from trackingbms.sim.config import PackConfig, Quirks, SimConfigError, parse_faults
from trackingbms.sim.endpoints import (
    PtyEndpoint,
    TcpEndpoint,
    TruthServer,
    serve_pty,
    serve_tcp,
    serve_truth,
    write_truth_file,
)
from trackingbms.sim.pack import Bus, ManualClock, RealTimeClock, SimulatedPack
from trackingbms.sim.responder import Emission, RequestParser

__all__ = [
    "Bus",
    "Emission",
    "ManualClock",
    "PackConfig",
    "PtyEndpoint",
    "Quirks",
    "RealTimeClock",
    "RequestParser",
    "SimConfigError",
    "SimulatedPack",
    "TcpEndpoint",
    "TruthServer",
    "parse_faults",
    "serve_pty",
    "serve_tcp",
    "serve_truth",
    "write_truth_file",
]
