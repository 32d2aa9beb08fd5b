"""Alarms, alarm rules, battery health and notification targets (issue 11). Reads for every user of the
tenant; acknowledging and changing rules for admins and operators; notification targets (their URLs may
carry credentials) for admins and operators only, reads included."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from trackingbms.server.api.common import E401, E404, err422, json_response
from trackingbms.server.api.deps import CurrentUser, Tenant, Writer
from trackingbms.server.schemas import (
    AlarmOut,
    HealthOut,
    NotifyTargetIn,
    NotifyTargetOut,
    RuleFields,
    RuleIn,
    RuleOut,
    RulesOut,
    Severity,
)

router = APIRouter()
#: a row id in the URL: the columns are 32-bit, so a larger number is refused (422) before it reaches
#: PostgreSQL, which would fail on it
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
E403 = {403: {"description": "viewers may not change anything"}}


def _service(request: Request):  # type: ignore[no-untyped-def]
    return request.app.state.alarms


@router.get(
    "/batteries/{battery_id}/health", response_model=HealthOut, tags=["alarms"], responses={**E401, **E404}
)
async def battery_health(battery_id: str, ts: Tenant) -> Response:
    """The analytics engine's health report for one battery (SOH with confidence, resistance, SOC drift,
    weak cells with evidence) and its active alarms."""
    return json_response(await ts.health(battery_id))


@router.get("/alarms", response_model=list[AlarmOut], tags=["alarms"], responses=E401)
async def list_alarms(
    ts: Tenant,
    site: Annotated[str | None, Query(max_length=200, description="site name")] = None,
    severity: Severity | None = None,
    active: Annotated[bool | None, Query(description="true: active only; false: history only")] = None,
    battery_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> Response:
    """Active alarms first (newest first), then cleared ones."""
    return json_response(
        await ts.alarms(site=site, severity=severity, active=active, battery_id=battery_id, limit=limit)
    )


@router.post(
    "/alarms/{alarm_id}/ack", response_model=AlarmOut, tags=["alarms"], responses={**E401, **E403, **E404}
)
async def ack_alarm(alarm_id: RowId, ts: Tenant, user: Writer, request: Request) -> Response:
    """Acknowledge an alarm (who and when are kept; no more reminders). An alarm already acknowledged or
    cleared is returned as it is."""
    item, _pk, rule_id, changed = await ts.ack_alarm(alarm_id, user.email)
    if changed:
        await _service(request).acknowledge(user.tenant_id, item["battery_id"], rule_id, user.email)
    return json_response(item)


@router.get("/alarm-rules", response_model=RulesOut, tags=["alarms"], responses=E401)
async def list_rules(ts: Tenant) -> Response:
    """The built-in rules and your tenant's overrides (tenant-wide, per site, per battery)."""
    return json_response(await ts.alarm_rules())


@router.post(
    "/alarm-rules",
    response_model=RuleOut,
    status_code=201,
    tags=["alarms"],
    responses={**E401, **E403, **E404, 422: {"description": "not a valid rule"}},
)
async def create_rule(body: RuleIn, ts: Tenant, user: Writer, request: Request) -> Response:
    """Override a built-in rule (only the fields given) for the tenant, a site or a battery, or add a
    rule of your own (then `metric`, `op` and `set` are required)."""
    if body.site and body.battery_id:
        raise err422(["body", "site"], "give site or battery_id, not both", "value_error")
    try:
        item = await ts.create_rule(body.model_dump())
    except ValueError as e:
        raise err422(["body"], str(e), "value_error") from None
    await _service(request).rules_changed(user.tenant_id)
    return json_response(item, 201)


@router.put(
    "/alarm-rules/{rule_pk}",
    response_model=RuleOut,
    tags=["alarms"],
    responses={**E401, **E403, **E404, 422: {"description": "not a valid rule"}},
)
async def update_rule(
    rule_pk: RowId, body: RuleFields, ts: Tenant, user: Writer, request: Request
) -> Response:
    """Change fields of an override (null / absent fields stay as they are)."""
    try:
        item = await ts.update_rule(rule_pk, body.model_dump())
    except ValueError as e:
        raise err422(["body"], str(e), "value_error") from None
    await _service(request).rules_changed(user.tenant_id)
    return json_response(item)


@router.delete("/alarm-rules/{rule_pk}", status_code=204, tags=["alarms"], responses={**E401, **E403, **E404})
async def delete_rule(rule_pk: RowId, ts: Tenant, user: Writer, request: Request) -> Response:
    """Remove an override: the level below applies again (a rule of your own is gone, its alarms clear)."""
    rule_id = await ts.delete_rule(rule_pk)
    await ts.close_alarms_of(rule_id, "cleared: the rule was deleted")
    await _service(request).rules_changed(user.tenant_id)
    return Response(status_code=204)


@router.get(
    "/notify-targets", response_model=list[NotifyTargetOut], tags=["alarms"], responses={**E401, **E403}
)
async def list_targets(ts: Tenant, _user: Writer) -> Response:
    return json_response(await ts.notify_targets())


@router.post(
    "/notify-targets",
    response_model=NotifyTargetOut,
    status_code=201,
    tags=["alarms"],
    responses={**E401, **E403, 422: {"description": "not a URL apprise understands"}},
)
async def add_target(body: NotifyTargetIn, ts: Tenant, _user: Writer) -> Response:
    """Where alarm messages go: an apprise URL, the severities it wants, whether recoveries are sent."""
    import apprise

    if not apprise.Apprise().add(body.url):
        raise err422(["body", "url"], "apprise does not understand this URL", "value_error")
    return json_response(await ts.add_notify_target(body.url, list(body.severities), body.recovery), 201)


@router.delete(
    "/notify-targets/{target_id}", status_code=204, tags=["alarms"], responses={**E401, **E403, **E404}
)
async def delete_target(target_id: RowId, ts: Tenant, _user: Writer) -> Response:
    await ts.delete_notify_target(target_id)
    return Response(status_code=204)


__all__ = ["CurrentUser", "router"]
