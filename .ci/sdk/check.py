#!/usr/bin/env python3
"""Run the official OpenAI Python SDK against a running fluxgate.

Usage:
    python .ci/sdk/check.py [BASE_URL]

BASE_URL defaults to $FLUXGATE_BASE_URL, then http://127.0.0.1:8080/v1.
Environment:
    FLUXGATE_API_KEY    client token (default "sk-demo"; demo mode checks none)
    FLUXGATE_SDK_EDITS  "1" also runs the images.edit checks (default off)

Prints one line per check and ends with exactly "N passed, M failed";
the exit status is 1 when any check failed.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import openai

MODELS = [
    "flux-2-max",
    "flux-2-pro",
    "flux-2-pro-preview",
    "flux-2-flex",
    "flux-2-klein-9b",
    "flux-2-klein-4b",
    "flux-2-klein-9b-preview",
    "flux-kontext-max",
    "flux-kontext-pro",
    "flux-pro-1.1-ultra",
    "flux-pro-1.1",
    "flux-pro",
    "flux-dev",
]
# Models whose size becomes an aspect_ratio upstream: the output keeps the
# ratio, not the exact pixel size.
ASPECT_RATIO_MODELS = {"flux-kontext-max", "flux-kontext-pro", "flux-pro-1.1-ultra"}
SIZE = (1024, 768)  # valid for every row: x16 for FLUX.2, x32 for legacy, 4:3 for ratio models
PROMPT = "a red fox in fresh snow, golden hour, 35mm photo"

_lock = threading.Lock()
_passed = 0
_failed = 0


class CheckFailed(Exception):
    pass


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise CheckFailed(what)


def check(name: str, fn: Callable[[], str | None]) -> None:
    """Run one check; print PASS/FAIL with timing and count it."""
    global _passed, _failed
    t0 = time.monotonic()
    try:
        detail = fn()
    except CheckFailed as e:
        ok, detail = False, str(e)
    except Exception as e:  # noqa: BLE001 - any error is a failed check
        ok, detail = False, f"{type(e).__name__}: {e}"
        if os.environ.get("FLUXGATE_SDK_VERBOSE"):
            detail += "\n" + traceback.format_exc()
    else:
        ok = True
    ms = (time.monotonic() - t0) * 1000
    with _lock:
        if ok:
            _passed += 1
        else:
            _failed += 1
        line = f"{'PASS' if ok else 'FAIL'}  {name}  ({ms:.0f} ms)"
        if detail:
            line += f"  {detail}"
        print(line, flush=True)


# --------------------------------------------------------------------------- images


def sniff(data: bytes) -> str | None:
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from a JPEG, PNG or WebP header; None if unknown."""
    fmt = sniff(data)
    if fmt == "png" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if fmt == "jpeg":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                i += 1 if marker == 0xFF else 2
                continue
            seg_len = struct.unpack(">H", data[i + 2 : i + 4])[0]
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                return w, h
            i += 2 + seg_len
        return None
    if fmt == "webp" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8 ":
            w, h = struct.unpack("<HH", data[26:30])
            return w & 0x3FFF, h & 0x3FFF
        if chunk == b"VP8L":
            b = data[21:25]
            w = 1 + (((b[1] & 0x3F) << 8) | b[0])
            h = 1 + (((b[3] & 0x0F) << 10) | (b[2] << 2) | ((b[1] & 0xC0) >> 6))
            return w, h
        if chunk == b"VP8X":
            w = 1 + int.from_bytes(data[24:27], "little")
            h = 1 + int.from_bytes(data[27:30], "little")
            return w, h
    return None


def make_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A valid RGB PNG (a gradient over `rgb`), built with zlib + struct only."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    r, g, b = rgb
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter: none
        for x in range(width):
            rows += bytes(((r + x) & 0xFF, (g + y) & 0xFF, (b + x + y) & 0xFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(rows), 9)) + chunk(b"IEND", b"")


def download(url: str) -> tuple[bytes, str]:
    expect(isinstance(url, str) and url.startswith(("http://", "https://")), f"url is not absolute http(s): {url!r}")
    with urllib.request.urlopen(url, timeout=60) as resp:
        expect(resp.status == 200, f"GET {url} -> {resp.status}")
        return resp.read(), resp.headers.get("content-type", "")


def check_image_bytes(data: bytes, content_type: str | None, want_format: str | None = None) -> str:
    fmt = sniff(data)
    expect(fmt is not None, f"not a JPEG/PNG/WebP (first bytes {data[:12]!r}, {len(data)} bytes)")
    if want_format:
        expect(fmt == want_format, f"expected {want_format}, got {fmt}")
    if content_type is not None:
        expect(content_type.split(";")[0].strip().lower() == f"image/{fmt}", f"content-type {content_type!r} for {fmt} bytes")
    return fmt


def check_images_response(resp, want_format: str | None = None, want_size: tuple[int, int] | None = None, ratio_only: bool = False) -> str:
    expect(isinstance(resp.created, int) and resp.created > 1_600_000_000, f"bad created {resp.created!r}")
    expect(resp.data is not None and len(resp.data) == 1, f"expected 1 datum, got {resp.data!r}")
    url = resp.data[0].url
    expect(bool(url), f"datum has no url: {resp.data[0]!r}")
    data, ctype = download(url)
    fmt = check_image_bytes(data, ctype, want_format)
    dims = dimensions(data)
    if want_size:
        expect(dims is not None, f"cannot read {fmt} dimensions")
        if ratio_only:
            got, want = dims[0] / dims[1], want_size[0] / want_size[1]
            expect(abs(got - want) / want < 0.03, f"{dims[0]}x{dims[1]} is not {want_size[0]}:{want_size[1]}-ish")
        else:
            expect(tuple(dims) == want_size, f"got {dims[0]}x{dims[1]}, want {want_size[0]}x{want_size[1]}")
    d = f"{dims[0]}x{dims[1]}" if dims else "?x?"
    return f"{fmt} {d} {len(data)} B"


# --------------------------------------------------------------------------- checks


def expect_api_error(fn: Callable[[], object], cls: type, status: int, code: str | None = None, param: str | None = None, param_prefix: str | None = None) -> str:
    try:
        fn()
    except openai.APIStatusError as e:
        expect(type(e) is cls, f"raised {type(e).__name__} (HTTP {e.status_code}), want {cls.__name__}")
        expect(e.status_code == status, f"status {e.status_code}, want {status}")
        expect(bool(e.request_id), "no x-request-id on the error response")
        body = e.body
        expect(isinstance(body, dict), f"error body is not an object: {body!r}")
        for key in ("message", "type", "param", "code"):
            expect(key in body, f"error body lacks {key!r}: {body!r}")
        expect(isinstance(body["message"], str) and body["message"].strip() != "", f"empty message: {body!r}")
        expect(isinstance(body["type"], str) and body["type"] != "", f"empty type: {body!r}")
        if code is not None:
            expect(e.code == code, f"code {e.code!r}, want {code!r}")
        if param is not None:
            expect(e.param == param, f"param {e.param!r}, want {param!r}")
        if param_prefix is not None:
            expect(isinstance(e.param, str) and e.param.startswith(param_prefix), f"param {e.param!r}, want {param_prefix}*")
        return f"request_id={e.request_id} code={e.code} param={e.param}"
    raise CheckFailed(f"no error raised, want {cls.__name__}")


def main() -> int:
    base_url = (sys.argv[1] if len(sys.argv) > 1 else None) or os.environ.get("FLUXGATE_BASE_URL") or "http://127.0.0.1:8080/v1"
    api_key = os.environ.get("FLUXGATE_API_KEY") or "sk-demo"
    edits = os.environ.get("FLUXGATE_SDK_EDITS", "0") not in ("", "0", "false", "no")
    print(f"openai-python {openai.__version__} against {base_url} (edits {'on' if edits else 'off'})", flush=True)

    # No SDK retries anywhere: a retry would hide a gateway failure and make the error checks slow.
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=240)

    gen_checks: list[tuple[str, Callable[[], str | None]]] = []
    for m in MODELS:
        gen_checks.append((f"generate {m}", lambda m=m: check_images_response(client.images.generate(model=m, prompt=PROMPT))))
        w, h = SIZE
        gen_checks.append(
            (
                f"generate {m} size={w}x{h}",
                lambda m=m: check_images_response(
                    client.images.generate(model=m, prompt=PROMPT, size=f"{w}x{h}"),
                    want_size=SIZE,
                    ratio_only=m in ASPECT_RATIO_MODELS,
                ),
            )
        )

    def b64_json() -> str:
        resp = client.images.generate(model="flux-2-klein-4b", prompt=PROMPT, response_format="b64_json")
        expect(resp.data is not None and len(resp.data) == 1, f"expected 1 datum, got {resp.data!r}")
        b64 = resp.data[0].b64_json
        expect(bool(b64), f"datum has no b64_json: {resp.data[0]!r}")
        data = base64.b64decode(b64, validate=True)
        fmt = check_image_bytes(data, None)
        return f"{fmt} {len(data)} B"

    def extra_body() -> str:
        resp = client.images.generate(
            model="flux-2-pro",
            prompt=PROMPT,
            size="512x512",
            extra_body={"seed": 42, "safety_tolerance": 2, "output_format": "png"},
        )
        return check_images_response(resp, want_format="png", want_size=(512, 512))

    def webp_output() -> str:
        resp = client.images.generate(model="flux-dev", prompt=PROMPT, output_format="webp", extra_body={"seed": 7})
        return check_images_response(resp, want_format="webp")

    def success_request_id() -> str:
        raw = client.images.with_raw_response.generate(model="flux-2-klein-9b", prompt=PROMPT)
        rid = raw.headers.get("x-request-id")
        expect(bool(rid), "no x-request-id on a 200 response")
        check_images_response(raw.parse())
        return f"request_id={rid}"

    def n_two() -> str:
        resp = client.images.generate(model="flux-2-klein-4b", prompt=PROMPT, n=2)
        expect(resp.data is not None and len(resp.data) == 2, f"expected 2 data, got {resp.data!r}")
        urls = [d.url for d in resp.data]
        expect(all(urls) and urls[0] != urls[1], f"two distinct urls: {urls}")
        return "2 images"

    def stream_generate() -> str:
        events = list(client.images.generate(model="flux-2-klein-4b", prompt=PROMPT, size="512x384", stream=True))
        done = [e for e in events if e.type == "image_generation.completed"]
        expect(len(done) == 1, f"one completed event, got {[e.type for e in events]}")
        data = base64.b64decode(done[0].b64_json, validate=True)
        check_image_bytes(data, None)
        expect(dimensions(data) == (512, 384), f"size {dimensions(data)}")
        expect(done[0].size == "512x384", f"event size {done[0].size!r}")
        return f"{len(events)} event(s), {len(data)} B"

    def stream_moderated() -> str:
        try:
            for _ in client.images.generate(model="flux-2-klein-4b", prompt="a harbour [moderate-content]", stream=True):
                pass
        except openai.APIError as e:
            code = e.code if isinstance(e.code, str) else (e.body or {}).get("code") if isinstance(e.body, dict) else None
            expect(code == "moderation_blocked", f"code {code!r} body {e.body!r}")
            return f"{type(e).__name__}: {e.message}"
        raise CheckFailed("the stream ended without raising the moderation error")

    def idempotent_retry() -> str:
        sim = os.environ.get("FLUXGATE_SIM_URL")
        expect(sim is not None, "FLUXGATE_SIM_URL is not set: cannot count submits")
        marker = f"idem-{uuid.uuid4().hex[:8]}"
        key = f"key-{marker}"
        # The first attempt times out while BFL works; the SDK retries with the same headers and
        # the retry joins the running job instead of submitting again.
        retrying = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=3, timeout=1.5)
        resp = retrying.images.generate(
            model="flux-2-klein-4b", prompt=f"{marker} [slow:2000]", extra_headers={"Idempotency-Key": key}
        )
        again = client.images.generate(
            model="flux-2-klein-4b", prompt=f"{marker} [slow:2000]", extra_headers={"Idempotency-Key": key}
        )
        expect(resp.data[0].url == again.data[0].url, "a later call with the key gets the same image")
        with urllib.request.urlopen(f"{sim}/sim/tasks", timeout=10) as r:
            tasks = json.load(r)
        reached = sum(1 for t in tasks if marker in (t.get("prompt") or ""))
        expect(reached == 1, f"the submit reached the simulator {reached} times")
        return "retried through a timeout, reached BFL once"

    gen_checks += [
        ("generate stream=True -> image_generation.completed", stream_generate),
        ("generate stream=True [moderate-content] -> the SDK raises code=moderation_blocked", stream_moderated),
        ("generate with Idempotency-Key, SDK retry after a timeout -> one submit", idempotent_retry),
        ("generate flux-2-klein-4b n=2 -> two distinct images", n_two),
        ("generate flux-2-klein-4b response_format=b64_json", b64_json),
        ("generate flux-2-pro extra_body seed/safety_tolerance/output_format=png", extra_body),
        ("generate flux-dev output_format=webp", webp_output),
        ("generate x-request-id on success", success_request_id),
    ]

    def models_list() -> str:
        page = client.models.list()
        got = {m.id: m for m in page.data}
        missing = [m for m in MODELS if m not in got]
        expect(not missing, f"missing models: {missing}")
        wrong = {m: got[m].owned_by for m in MODELS if got[m].owned_by != "black-forest-labs"}
        expect(not wrong, f"owned_by not black-forest-labs: {wrong}")
        return f"{len(got)} models"

    check("models.list has all 13 ids, owned_by black-forest-labs", models_list)

    check(
        "error 400 size=1000x1000 on flux-2-pro -> BadRequestError param=size",
        lambda: expect_api_error(
            lambda: client.images.generate(model="flux-2-pro", prompt=PROMPT, size="1000x1000"),
            openai.BadRequestError,
            400,
            param="size",
        ),
    )
    check(
        "error 404 model=flux-9-imaginary -> NotFoundError code=model_not_found",
        lambda: expect_api_error(
            lambda: client.images.generate(model="flux-9-imaginary", prompt=PROMPT),
            openai.NotFoundError,
            404,
            code="model_not_found",
        ),
    )
    check(
        "error 403 [moderate-request] -> PermissionDeniedError code=moderation_blocked",
        lambda: expect_api_error(
            lambda: client.images.generate(model="flux-2-pro", prompt="a quiet harbour at dawn [moderate-request]"),
            openai.PermissionDeniedError,
            403,
            code="moderation_blocked",
        ),
    )

    with ThreadPoolExecutor(max_workers=12) as pool:
        for name, fn in gen_checks:
            pool.submit(check, name, fn)

    if edits:
        run_edit_checks(client)

    run_lost_submit_checks(base_url, api_key)
    run_async_webhook_check(base_url, api_key)
    run_metrics_check(base_url, api_key)

    print(f"{_passed} passed, {_failed} failed", flush=True)
    return 1 if _failed else 0


def run_lost_submit_checks(base_url: str, api_key: str) -> None:
    """A submit whose answer is lost (no answer, a reply cut off, a reply that is not JSON) may
    have been taken by BFL: with the SDK's default retries on, it must still reach the simulator
    exactly once, and the error must be the SDK's 502 error."""
    sim = os.environ.get("FLUXGATE_SIM_URL")
    # The SDK's defaults: max_retries=2, so a retryable answer would be sent three times.
    client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=120)

    def lost(how: str) -> Callable[[], str]:
        def run() -> str:
            marker = f"lost-{how}-{uuid.uuid4().hex[:8]}"
            detail = expect_api_error(
                lambda: client.images.generate(model="flux-2-klein-4b", prompt=f"{marker} [after-submit:{how}]"),
                openai.InternalServerError,
                502,
            )
            expect(sim is not None, "FLUXGATE_SIM_URL is not set: cannot count submits")
            with urllib.request.urlopen(f"{sim}/sim/tasks", timeout=10) as r:
                tasks = json.load(r)
            reached = sum(1 for t in tasks if marker in (t.get("prompt") or ""))
            expect(reached == 1, f"the submit reached the simulator {reached} times")
            return f"{detail}; reached BFL once"

        return run

    for how in ("hang", "reset", "garbage"):
        check(f"lost submit answer ({how}) with default SDK retries -> one submit, 502", lost(how))


def _post_json(url: str, body: dict, api_key: str) -> tuple[int, dict]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {api_key}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def run_async_webhook_check(base_url: str, api_key: str) -> None:
    """An async job with a webhook_url: the receiver fails twice, then the third delivery is
    accepted; every delivery verifies with the standardwebhooks library and carries one id."""
    import http.server
    from standardwebhooks.webhooks import Webhook

    secret = os.environ.get("FLUXGATE_WEBHOOK_SECRET")
    seen: list[tuple[dict, bytes]] = []
    done = threading.Event()

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            seen.append(({k.lower(): v for k, v in self.headers.items()}, body))
            ok = len(seen) >= 3
            self.send_response(204 if ok else 500)
            self.end_headers()
            if ok:
                done.set()

        def log_message(self, *args: object) -> None:
            pass

    def run() -> str:
        expect(bool(secret), "FLUXGATE_WEBHOOK_SECRET is not set")
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
            status, job = _post_json(
                f"{base_url}/async/images/generations",
                {"model": "flux-2-klein-4b", "prompt": PROMPT, "webhook_url": hook},
                api_key,
            )
            expect(status == 202, f"202 for an async job, got {status} {job}")
            expect(job.get("object") == "image.job", f"an image.job: {job}")
            # Bounded: the job takes a second or two, the retries a fraction of a second each.
            expect(done.wait(60), f"three deliveries within 60 s, got {len(seen)}")
            verifier = Webhook(secret)
            for headers, body in seen:
                verifier.verify(body, headers)
            ids = {h["webhook-id"] for h, _ in seen}
            expect(len(ids) == 1, f"one webhook id across retries: {ids}")
            final = json.loads(seen[-1][1])
            expect(final.get("id") == job["id"] and final.get("status") == "succeeded", f"the job object: {final}")
            with urllib.request.urlopen(
                urllib.request.Request(f"{base_url}/async/jobs/{job['id']}", headers={"authorization": f"Bearer {api_key}"}),
                timeout=10,
            ) as r:
                polled = json.load(r)
            expect(polled.get("data") == final.get("data"), "GET /v1/async/jobs/{id} shows the same data")
            return f"{len(seen)} deliveries, verified by standardwebhooks, one id"
        finally:
            server.shutdown()

    check("async job with webhook_url: retried after two failures, verified with standardwebhooks", run)


def run_metrics_check(base_url: str, api_key: str) -> None:
    """/metrics parses as Prometheus text, and its counters move with a known run."""
    from prometheus_client.parser import text_string_to_metric_families

    root = base_url.rsplit("/v1", 1)[0]

    def scrape() -> dict[tuple[str, tuple], float]:
        with urllib.request.urlopen(f"{root}/metrics", timeout=10) as r:
            text = r.read().decode()
        samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return samples

    def run() -> str:
        client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=60)
        before = scrape()
        for _ in range(3):
            client.images.generate(model="flux-dev", prompt=PROMPT)
        try:
            client.images.generate(model="flux-dev", prompt=PROMPT, size="3x3")
        except openai.BadRequestError:
            pass
        after = scrape()

        def delta(name: str, **labels: str) -> float:
            key = (name, tuple(sorted(labels.items())))
            return after.get(key, 0.0) - before.get(key, 0.0)

        ok = delta("fluxgate_http_requests_total", route="/v1/images/generations", status="200")
        bad = delta("fluxgate_http_requests_total", route="/v1/images/generations", status="400")
        billed = delta("fluxgate_images_billed_total", model="flux-dev", client="anonymous")
        usd = delta("fluxgate_billed_usd_total", model="flux-dev", client="anonymous")
        # Other checks run at the same time only on other models; these count this run alone.
        expect(ok >= 3 and bad >= 1, f"requests counted: 200 +{ok}, 400 +{bad}")
        expect(billed == 3, f"3 flux-dev images billed, got +{billed}")
        expect(abs(usd - 0.06) < 1e-9, f"$0.06 billed for flux-dev, got +{usd}")
        expect(any(k[0] == "fluxgate_job_duration_seconds_count" for k in after), "job durations recorded")
        return f"parsed {len(after)} samples; +{billed:.0f} images, +${usd:.2f}"

    check("/metrics parses with prometheus_client and counts the run", run)


def run_edit_checks(client: openai.OpenAI) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="fluxgate-sdk-"))
    colours = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]
    paths = []
    for i, c in enumerate(colours):
        p = tmp / f"ref{i}.png"
        p.write_bytes(make_png(256, 256, c))
        paths.append(p)

    def single_file_handle() -> str:
        with open(paths[0], "rb") as f:
            resp = client.images.edit(model="flux-kontext-pro", image=f, prompt="make it night time")
        return check_images_response(resp)

    def single_raw_bytes() -> str:
        # Raw bytes: the SDK sends filename "upload" and no useful content type.
        resp = client.images.edit(model="flux-2-klein-4b", image=paths[1].read_bytes(), prompt="add a hat")
        return check_images_response(resp)

    def list_of_three(model: str) -> Callable[[], str]:
        def run() -> str:
            files = [(p.name, p.read_bytes(), "image/png") for p in paths]
            resp = client.images.edit(model=model, image=files, prompt="combine these three into one scene")
            return check_images_response(resp)

        return run

    def list_of_one() -> str:
        with open(paths[2], "rb") as f:
            resp = client.images.edit(model="flux-kontext-pro", image=[f], prompt="watercolour style")
        return check_images_response(resp)

    def too_many_refs() -> str:
        files = [(p.name, p.read_bytes(), "image/png") for p in paths]
        return expect_api_error(
            lambda: client.images.edit(model="flux-kontext-pro", image=files, prompt="too many"),
            openai.BadRequestError,
            400,
            param_prefix="image",
        )

    def stream_edit() -> str:
        with open(paths[0], "rb") as f:
            events = list(client.images.edit(model="flux-2-klein-4b", image=f, prompt="make it night", stream=True))
        done = [e for e in events if e.type == "image_edit.completed"]
        expect(len(done) == 1, f"one completed event, got {[e.type for e in events]}")
        return check_image_bytes(base64.b64decode(done[0].b64_json, validate=True), None)

    def edit_b64() -> str:
        resp = client.images.edit(model="flux-2-klein-4b", image=paths[1].read_bytes(), prompt="add a hat", response_format="b64_json")
        return check_image_bytes(base64.b64decode(resp.data[0].b64_json, validate=True), None)

    edit_checks = [
        ("edit flux-2-klein-4b stream=True -> image_edit.completed", stream_edit),
        ("edit flux-2-klein-4b response_format=b64_json", edit_b64),
        ("edit flux-kontext-pro image=<file handle>", single_file_handle),
        ("edit flux-2-klein-4b image=<raw bytes>", single_raw_bytes),
        ("edit flux-kontext-pro image[]=1 file", list_of_one),
        ("edit flux-2-pro image[]=3 files", list_of_three("flux-2-pro")),
        ("edit flux-2-klein-4b image[]=3 files", list_of_three("flux-2-klein-4b")),
        ("edit flux-kontext-pro image[]=3 files -> BadRequestError", too_many_refs),
    ]
    with ThreadPoolExecutor(max_workers=6) as pool:
        for name, fn in edit_checks:
            pool.submit(check, name, fn)


if __name__ == "__main__":
    sys.exit(main())
