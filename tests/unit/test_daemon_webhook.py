"""Alertmanager payload checks and mapping, and the webhook over real HTTP (in-process app,
real journal): auth, 413, precise 400s, dedup, resolved cancels, 503 when saturated. Hypothesis
drives both the parser and the endpoint with payloads nobody wrote by hand."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remed_daemon.config import HttpConfig, Secret, TelemetryConfig
from remed_daemon.errors import IntakeRejected
from remed_daemon.http import HttpDeps, build_app
from remed_daemon.journal import Incident, Journal, State
from remed_daemon.schemas import iter_errors
from remed_daemon.sources.alertmanager import map_alerts, parse_payload
from remed_daemon.telemetry import Metrics, make_tracer

pytestmark = pytest.mark.unit
TOKEN = "t0ken"


def alert(fp: str = "a1b2", status: str = "firing", **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "CartDown", "service": "cart", "instance": "app:9100", **labels},
        "annotations": {"summary": "cart is down", "description": "5xx rate 100%"},
        "startsAt": "2026-11-24T10:00:00.123Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prom/graph",
        "fingerprint": fp,
    }


def payload(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="CartDown"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "remed",
        "groupLabels": {"alertname": "CartDown"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://am",
        "alerts": list(alerts),
    }


def test_mapping_to_schema_valid_report() -> None:
    [m] = map_alerts(
        parse_payload(json.dumps(payload(alert(severity="critical"))).encode()),
        ("service", "job"),
        ("host", "instance"),
        "2026-11-24T10:00:01Z",
    )
    assert m.target == "cart@app" and m.unroutable == ""
    assert iter_errors("diagnosis-report", m.report) == []
    assert m.report["severity"] == "critical" and m.report["summary"] == "cart is down"
    assert m.idem_key == "am:a1b2:2026-11-24T10:00:00.123Z"
    assert any("5xx" in e for e in m.report["evidence"])


def test_alert_without_target_labels_is_unroutable() -> None:
    a = alert()
    del a["labels"]["service"]
    [m] = map_alerts(parse_payload(json.dumps(payload(a)).encode()), ("service",), ("host",))
    assert m.target == "" and "no target" in m.unroutable


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p.update(version="3"), 'version: expected "4"'),
        (lambda p: p.pop("groupKey"), "groupKey: expected a string"),
        (lambda p: p.update(alerts=[]), "alerts: expected a non-empty list"),
        (lambda p: p["alerts"][0].update(status="on"), "alerts[0].status"),
        (lambda p: p["alerts"][0]["labels"].update(x=1), "alerts[0].labels.x: expected a string"),
        (lambda p: p["alerts"][0].update(startsAt="yesterday"), "alerts[0].startsAt"),
        (lambda p: p["alerts"][0].update(fingerprint="../x"), "alerts[0].fingerprint"),
        (lambda p: p.update(commonLabels=[]), "commonLabels: expected an object"),
    ],
)
def test_precise_messages(mutate: Any, message: str) -> None:
    p = payload(alert())
    mutate(p)
    with pytest.raises(IntakeRejected) as err:
        parse_payload(json.dumps(p).encode())
    assert message in str(err.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


def near_valid() -> st.SearchStrategy[dict[str, Any]]:
    """Valid payloads with one field swapped for arbitrary JSON."""
    keys = st.sampled_from(["version", "groupKey", "status", "alerts", "commonLabels"])
    akeys = st.sampled_from(["status", "labels", "annotations", "startsAt", "fingerprint"])

    @st.composite
    def build(draw: Any) -> dict[str, Any]:
        p = payload(alert(draw(st.from_regex(r"[0-9a-f]{4,16}", fullmatch=True))))
        if draw(st.booleans()):
            p[draw(keys)] = draw(json_values)
        else:
            p["alerts"][0][draw(akeys)] = draw(json_values)
        return p

    return build()


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | near_valid().map(lambda v: json.dumps(v).encode())
)
def test_parser_only_ever_rejects_cleanly(body: bytes) -> None:
    try:
        doc = parse_payload(body)
    except IntakeRejected as exc:
        assert str(exc)
        return
    for m in map_alerts(doc, ("service",), ("instance",)):
        assert m.unroutable or iter_errors("diagnosis-report", m.report) == []


# -- over HTTP ----------------------------------------------------------------------------


class Server:
    def __init__(self, base: str, journal: Journal, submitted: list[Incident]) -> None:
        self.base = base
        self.journal = journal
        self.submitted = submitted
        self.depth = 0


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    journal = Journal(tmp_path / "j.sqlite3")
    await journal.open()
    submitted: list[Incident] = []
    tracer, _ = make_tracer(TelemetryConfig())
    holder: dict[str, Server] = {}
    cfg = HttpConfig(
        bearer_token=Secret(TOKEN),
        basic_user="am",
        basic_password=Secret("pw"),
        max_body_bytes=64 * 1024,
        max_pending_incidents=3,
    )
    deps = HttpDeps(
        cfg=cfg,
        journal=journal,
        metrics=Metrics.create(),
        tracer=tracer,
        submit=submitted.append,
        cancel=lambda inc: None,
        depth=lambda: holder["s"].depth,
        ready=lambda: True,
    )
    runner = web.AppRunner(build_app(deps))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    holder["s"] = Server(f"http://127.0.0.1:{port}", journal, submitted)
    yield holder["s"]
    await runner.cleanup()
    await journal.close()


async def post(s: Server, body: bytes, auth: str | None = f"Bearer {TOKEN}") -> tuple[int, Any]:
    headers = {"Authorization": auth} if auth else {}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{s.base}/webhook/alertmanager", data=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json()


async def test_auth_required(server: Server) -> None:
    body = json.dumps(payload(alert())).encode()
    assert (await post(server, body, auth=None))[0] == 401
    assert (await post(server, body, auth="Bearer nope"))[0] == 401
    assert (await post(server, body, auth="Basic " + base64.b64encode(b"am:no").decode()))[0] == 401
    ok = "Basic " + base64.b64encode(b"am:pw").decode()
    assert (await post(server, body, auth=ok))[0] == 202


async def test_oversized_and_malformed(server: Server) -> None:
    status, doc = await post(server, b"{" + b" " * 70_000 + b"}")
    assert status == 413
    status, doc = await post(server, b"not json")
    assert status == 400 and "not JSON" in doc["error"]


async def test_dedup_and_resolved_cancels(server: Server) -> None:
    body = json.dumps(payload(alert("f1"), alert("f2"))).encode()
    assert await post(server, body) == (
        202,
        {"accepted": 2, "duplicates": 0, "cancelled": 0, "unroutable": []},
    )
    assert (await post(server, body))[1]["duplicates"] == 2
    assert len(server.submitted) == 2
    resolved = json.dumps(payload(alert("f1", status="resolved"), status="resolved")).encode()
    assert (await post(server, resolved))[1]["cancelled"] == 1
    inc = await server.journal.by_idem_key("am:f1:2026-11-24T10:00:00.123Z")
    assert inc is not None and inc.state is State.CANCELLED
    assert (await post(server, resolved))[1] == {
        "accepted": 0,
        "duplicates": 1,
        "cancelled": 0,
        "unroutable": [],
    }


async def test_saturated_is_503(server: Server) -> None:
    server.depth = 3
    status, doc = await post(server, json.dumps(payload(alert())).encode())
    assert status == 503 and "retry" in doc["error"]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=near_valid().map(lambda v: json.dumps(v).encode()) | st.binary(max_size=100))
async def test_endpoint_never_500s(server: Server, body: bytes) -> None:
    status, doc = await post(server, body)
    assert status in (202, 400), (status, doc)
