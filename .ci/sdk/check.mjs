#!/usr/bin/env node
// Run the official OpenAI Node SDK against a running fluxgate.
//
// Usage:
//     npm ci --prefix .ci/sdk && node .ci/sdk/check.mjs [BASE_URL]
//
// BASE_URL defaults to $FLUXGATE_BASE_URL, then http://127.0.0.1:8080/v1.
// Environment:
//     FLUXGATE_API_KEY    client token (default "sk-demo"; demo mode checks none)
//     FLUXGATE_SDK_EDITS  "1" also runs the images.edit checks (default off)
//
// Prints one line per check and ends with exactly "N passed, M failed";
// the exit status is 1 when any check failed.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import OpenAI, { toFile } from 'openai';
import { VERSION } from 'openai/version';

const MODELS = [
  'flux-2-max',
  'flux-2-pro',
  'flux-2-pro-preview',
  'flux-2-flex',
  'flux-2-klein-9b',
  'flux-2-klein-4b',
  'flux-kontext-max',
  'flux-kontext-pro',
  'flux-pro-1.1-ultra',
  'flux-pro-1.1',
  'flux-pro',
  'flux-dev',
];
// Models whose size becomes an aspect_ratio upstream: the output keeps the ratio, not the pixels.
const ASPECT_RATIO_MODELS = new Set(['flux-kontext-max', 'flux-kontext-pro', 'flux-pro-1.1-ultra']);
const SIZE = [1024, 768]; // valid for every row: x16 for FLUX.2, x32 for legacy, 4:3 for ratio models
const PROMPT = 'a red fox in fresh snow, golden hour, 35mm photo';

let passed = 0;
let failed = 0;

class CheckFailed extends Error {}

function expect(cond, what) {
  if (!cond) throw new CheckFailed(what);
}

async function check(name, fn) {
  const t0 = performance.now();
  let ok = true;
  let detail;
  try {
    detail = await fn();
  } catch (e) {
    ok = false;
    detail = e instanceof CheckFailed ? e.message : `${e?.constructor?.name ?? 'Error'}: ${e?.message ?? e}`;
    if (process.env.FLUXGATE_SDK_VERBOSE && !(e instanceof CheckFailed)) detail += `\n${e?.stack ?? ''}`;
  }
  const ms = Math.round(performance.now() - t0);
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? 'PASS' : 'FAIL'}  ${name}  (${ms} ms)${detail ? `  ${detail}` : ''}`);
}

// Run async thunks with at most `limit` in flight.
async function pool(limit, thunks) {
  let next = 0;
  const worker = async () => {
    while (next < thunks.length) {
      const i = next++;
      await thunks[i]();
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, thunks.length) }, worker));
}

// ----------------------------------------------------------------------------- images

function sniff(buf) {
  if (buf.length >= 3 && buf[0] === 0xff && buf[1] === 0xd8 && buf[2] === 0xff) return 'jpeg';
  if (buf.length >= 8 && buf.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) {
    return 'png';
  }
  if (buf.length >= 12 && buf.toString('latin1', 0, 4) === 'RIFF' && buf.toString('latin1', 8, 12) === 'WEBP') {
    return 'webp';
  }
  return null;
}

// [width, height] from a JPEG, PNG or WebP header; null if unknown.
function dimensions(buf) {
  const fmt = sniff(buf);
  if (fmt === 'png' && buf.length >= 24) return [buf.readUInt32BE(16), buf.readUInt32BE(20)];
  if (fmt === 'jpeg') {
    const sof = new Set([0xc0, 0xc1, 0xc2, 0xc3, 0xc5, 0xc6, 0xc7, 0xc9, 0xca, 0xcb, 0xcd, 0xce, 0xcf]);
    let i = 2;
    while (i + 9 < buf.length) {
      if (buf[i] !== 0xff) {
        i++;
        continue;
      }
      const marker = buf[i + 1];
      if (marker === 0xff) {
        i++;
        continue;
      }
      if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
        i += 2;
        continue;
      }
      if (sof.has(marker)) return [buf.readUInt16BE(i + 7), buf.readUInt16BE(i + 5)];
      i += 2 + buf.readUInt16BE(i + 2);
    }
    return null;
  }
  if (fmt === 'webp' && buf.length >= 30) {
    const chunk = buf.toString('latin1', 12, 16);
    if (chunk === 'VP8 ') return [buf.readUInt16LE(26) & 0x3fff, buf.readUInt16LE(28) & 0x3fff];
    if (chunk === 'VP8L') {
      const b = buf.subarray(21, 25);
      return [1 + (((b[1] & 0x3f) << 8) | b[0]), 1 + (((b[3] & 0x0f) << 10) | (b[2] << 2) | ((b[1] & 0xc0) >> 6))];
    }
    if (chunk === 'VP8X') return [1 + buf.readUIntLE(24, 3), 1 + buf.readUIntLE(27, 3)];
  }
  return null;
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// A valid RGB PNG (a gradient over `rgb`), built with zlib only.
function makePng(width, height, [r, g, b]) {
  const chunk = (kind, body) => {
    const head = Buffer.alloc(4);
    head.writeUInt32BE(body.length);
    const kb = Buffer.concat([Buffer.from(kind, 'latin1'), body]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(kb));
    return Buffer.concat([head, kb, crc]);
  };
  const rows = Buffer.alloc(height * (1 + width * 3));
  let o = 0;
  for (let y = 0; y < height; y++) {
    rows[o++] = 0; // filter: none
    for (let x = 0; x < width; x++) {
      rows[o++] = (r + x) & 0xff;
      rows[o++] = (g + y) & 0xff;
      rows[o++] = (b + x + y) & 0xff;
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(rows, { level: 9 })),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

async function download(url) {
  expect(typeof url === 'string' && /^https?:\/\//.test(url), `url is not absolute http(s): ${JSON.stringify(url)}`);
  const res = await fetch(url, { signal: AbortSignal.timeout(60_000) });
  expect(res.status === 200, `GET ${url} -> ${res.status}`);
  return [Buffer.from(await res.arrayBuffer()), res.headers.get('content-type') ?? ''];
}

function checkImageBytes(buf, contentType, wantFormat) {
  const fmt = sniff(buf);
  expect(fmt !== null, `not a JPEG/PNG/WebP (first bytes ${buf.subarray(0, 12).toString('hex')}, ${buf.length} bytes)`);
  if (wantFormat) expect(fmt === wantFormat, `expected ${wantFormat}, got ${fmt}`);
  if (contentType !== null) {
    const ct = contentType.split(';')[0].trim().toLowerCase();
    expect(ct === `image/${fmt}`, `content-type ${JSON.stringify(contentType)} for ${fmt} bytes`);
  }
  return fmt;
}

async function checkImagesResponse(resp, { wantFormat, wantSize, ratioOnly = false } = {}) {
  expect(Number.isInteger(resp.created) && resp.created > 1_600_000_000, `bad created ${JSON.stringify(resp.created)}`);
  expect(Array.isArray(resp.data) && resp.data.length === 1, `expected 1 datum, got ${JSON.stringify(resp.data)}`);
  const url = resp.data[0].url;
  expect(Boolean(url), `datum has no url: ${JSON.stringify(resp.data[0]).slice(0, 200)}`);
  const [buf, ctype] = await download(url);
  const fmt = checkImageBytes(buf, ctype, wantFormat);
  const dims = dimensions(buf);
  if (wantSize) {
    expect(dims !== null, `cannot read ${fmt} dimensions`);
    if (ratioOnly) {
      const got = dims[0] / dims[1];
      const want = wantSize[0] / wantSize[1];
      expect(Math.abs(got - want) / want < 0.03, `${dims[0]}x${dims[1]} is not ${wantSize[0]}:${wantSize[1]}-ish`);
    } else {
      expect(dims[0] === wantSize[0] && dims[1] === wantSize[1], `got ${dims[0]}x${dims[1]}, want ${wantSize.join('x')}`);
    }
  }
  return `${fmt} ${dims ? dims.join('x') : '?x?'} ${buf.length} B`;
}

async function expectApiError(fn, cls, status, { code, param, paramPrefix } = {}) {
  let err;
  try {
    await fn();
  } catch (e) {
    err = e;
  }
  expect(err !== undefined, `no error thrown, want ${cls.name}`);
  expect(err instanceof OpenAI.APIError, `threw ${err?.constructor?.name}: ${err?.message}`);
  expect(err instanceof cls && err.constructor === cls, `threw ${err.constructor.name} (HTTP ${err.status}), want ${cls.name}`);
  expect(err.status === status, `status ${err.status}, want ${status}`);
  expect(Boolean(err.requestID), 'no x-request-id on the error response');
  const body = err.error;
  expect(body !== null && typeof body === 'object', `error body is not an object: ${JSON.stringify(body)}`);
  for (const key of ['message', 'type', 'param', 'code']) {
    expect(key in body, `error body lacks ${key}: ${JSON.stringify(body)}`);
  }
  expect(typeof body.message === 'string' && body.message.trim() !== '', `empty message: ${JSON.stringify(body)}`);
  expect(typeof body.type === 'string' && body.type !== '', `empty type: ${JSON.stringify(body)}`);
  if (code !== undefined) expect(err.code === code, `code ${JSON.stringify(err.code)}, want ${code}`);
  if (param !== undefined) expect(err.param === param, `param ${JSON.stringify(err.param)}, want ${param}`);
  if (paramPrefix !== undefined) {
    expect(typeof err.param === 'string' && err.param.startsWith(paramPrefix), `param ${JSON.stringify(err.param)}, want ${paramPrefix}*`);
  }
  return `request_id=${err.requestID} code=${err.code} param=${err.param}`;
}

// ----------------------------------------------------------------------------- checks

async function main() {
  const baseURL = process.argv[2] || process.env.FLUXGATE_BASE_URL || 'http://127.0.0.1:8080/v1';
  const apiKey = process.env.FLUXGATE_API_KEY || 'sk-demo';
  const edits = !['', '0', 'false', 'no'].includes(process.env.FLUXGATE_SDK_EDITS ?? '0');
  console.log(`openai-node ${VERSION} on node ${process.version} against ${baseURL} (edits ${edits ? 'on' : 'off'})`);

  // No SDK retries anywhere: a retry would hide a gateway failure and make the error checks slow.
  const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 240_000 });

  const gen = [];
  for (const m of MODELS) {
    gen.push([`generate ${m}`, async () => checkImagesResponse(await client.images.generate({ model: m, prompt: PROMPT }))]);
    gen.push([
      `generate ${m} size=${SIZE.join('x')}`,
      async () =>
        checkImagesResponse(await client.images.generate({ model: m, prompt: PROMPT, size: SIZE.join('x') }), {
          wantSize: SIZE,
          ratioOnly: ASPECT_RATIO_MODELS.has(m),
        }),
    ]);
  }
  gen.push([
    'generate flux-2-klein-4b response_format=b64_json',
    async () => {
      const resp = await client.images.generate({ model: 'flux-2-klein-4b', prompt: PROMPT, response_format: 'b64_json' });
      expect(Array.isArray(resp.data) && resp.data.length === 1, `expected 1 datum, got ${JSON.stringify(resp.data)}`);
      const b64 = resp.data[0].b64_json;
      expect(typeof b64 === 'string' && b64.length > 0, `datum has no b64_json: ${JSON.stringify(resp.data[0]).slice(0, 200)}`);
      expect(/^[A-Za-z0-9+/]+={0,2}$/.test(b64), 'b64_json is not standard base64');
      const buf = Buffer.from(b64, 'base64');
      return `${checkImageBytes(buf, null)} ${buf.length} B`;
    },
  ]);
  gen.push([
    'generate stream: true -> image_generation.completed',
    async () => {
      const stream = await client.images.generate({ model: 'flux-2-klein-4b', prompt: PROMPT, size: '512x384', stream: true });
      const types = [];
      let done;
      for await (const event of stream) {
        types.push(event.type);
        if (event.type === 'image_generation.completed') done = event;
      }
      expect(done, `a completed event, got ${types.join(', ')}`);
      const buf = Buffer.from(done.b64_json, 'base64');
      const dims = dimensions(buf);
      expect(dims && dims[0] === 512 && dims[1] === 384, `size ${dims}`);
      return `${types.length} event(s), ${checkImageBytes(buf, null)} ${buf.length} B`;
    },
  ]);
  gen.push([
    'generate stream: true [moderate-content] -> the SDK throws code=moderation_blocked',
    async () => {
      try {
        const stream = await client.images.generate({ model: 'flux-2-klein-4b', prompt: 'a harbour [moderate-content]', stream: true });
        for await (const _ of stream) {
          // read to the end
        }
      } catch (e) {
        expect(e instanceof OpenAI.APIError, `an APIError, got ${e?.constructor?.name}`);
        const code = e.code ?? e.error?.code;
        expect(code === 'moderation_blocked', `code ${code}`);
        return `${e.constructor.name}: ${e.message}`;
      }
      throw new CheckFailed('the stream ended without throwing the moderation error');
    },
  ]);
  gen.push([
    'generate with Idempotency-Key, SDK retry after a timeout -> one submit',
    async () => {
      const sim = process.env.FLUXGATE_SIM_URL;
      expect(sim, 'FLUXGATE_SIM_URL is not set: cannot count submits');
      const marker = `idem-${Math.random().toString(16).slice(2, 10)}`;
      const body = { model: 'flux-2-klein-4b', prompt: `${marker} [slow:2000]` };
      const headers = { 'Idempotency-Key': `key-${marker}` };
      // The first attempt times out while BFL works; the SDK retries with the same headers and the
      // retry joins the running job instead of submitting again.
      const resp = await client.images.generate(body, { headers, timeout: 1500, maxRetries: 3 });
      const again = await client.images.generate(body, { headers });
      expect(resp.data[0].url === again.data[0].url, 'a later call with the key gets the same image');
      const tasks = await (await fetch(`${sim}/sim/tasks`)).json();
      const reached = tasks.filter((t) => (t.prompt ?? '').includes(marker)).length;
      expect(reached === 1, `the submit reached the simulator ${reached} times`);
      return 'retried through a timeout, reached BFL once';
    },
  ]);
  gen.push([
    'generate flux-2-klein-4b n=2 -> two distinct images',
    async () => {
      const resp = await client.images.generate({ model: 'flux-2-klein-4b', prompt: PROMPT, n: 2 });
      expect(Array.isArray(resp.data) && resp.data.length === 2, `expected 2 data, got ${JSON.stringify(resp.data)}`);
      const urls = resp.data.map((d) => d.url);
      expect(urls.every((u) => typeof u === 'string') && urls[0] !== urls[1], `two distinct urls: ${urls}`);
      return '2 images';
    },
  ]);
  gen.push([
    'generate flux-2-pro extra keys seed/safety_tolerance/output_format=png',
    async () =>
      checkImagesResponse(
        await client.images.generate({
          model: 'flux-2-pro',
          prompt: PROMPT,
          size: '512x512',
          seed: 42,
          safety_tolerance: 2,
          output_format: 'png',
        }),
        { wantFormat: 'png', wantSize: [512, 512] },
      ),
  ]);
  gen.push([
    'generate flux-dev output_format=webp',
    async () =>
      checkImagesResponse(await client.images.generate({ model: 'flux-dev', prompt: PROMPT, output_format: 'webp', seed: 7 }), {
        wantFormat: 'webp',
      }),
  ]);
  gen.push([
    'generate x-request-id on success',
    async () => {
      const { data, response, request_id } = await client.images
        .generate({ model: 'flux-2-klein-9b', prompt: PROMPT })
        .withResponse();
      expect(Boolean(request_id) && response.headers.get('x-request-id') === request_id, 'no x-request-id on a 200 response');
      expect(data._request_id === request_id, `_request_id ${data._request_id} != ${request_id}`);
      await checkImagesResponse(data);
      return `request_id=${request_id}`;
    },
  ]);

  await check('models.list has all 13 ids, owned_by black-forest-labs', async () => {
    const got = new Map();
    for await (const m of client.models.list()) got.set(m.id, m);
    const missing = MODELS.filter((m) => !got.has(m));
    expect(missing.length === 0, `missing models: ${missing.join(', ')}`);
    const wrong = MODELS.filter((m) => got.get(m).owned_by !== 'black-forest-labs');
    expect(wrong.length === 0, `owned_by not black-forest-labs: ${wrong.map((m) => `${m}=${got.get(m).owned_by}`).join(', ')}`);
    return `${got.size} models`;
  });
  await check('error 400 size=1000x1000 on flux-2-pro -> BadRequestError param=size', () =>
    expectApiError(() => client.images.generate({ model: 'flux-2-pro', prompt: PROMPT, size: '1000x1000' }), OpenAI.BadRequestError, 400, {
      param: 'size',
    }),
  );
  await check('error 404 model=flux-9-imaginary -> NotFoundError code=model_not_found', () =>
    expectApiError(() => client.images.generate({ model: 'flux-9-imaginary', prompt: PROMPT }), OpenAI.NotFoundError, 404, {
      code: 'model_not_found',
    }),
  );
  await check('error 403 [moderate-request] -> PermissionDeniedError code=moderation_blocked', () =>
    expectApiError(
      () => client.images.generate({ model: 'flux-2-pro', prompt: 'a quiet harbour at dawn [moderate-request]' }),
      OpenAI.PermissionDeniedError,
      403,
      { code: 'moderation_blocked' },
    ),
  );

  await pool(
    12,
    gen.map(([name, fn]) => () => check(name, fn)),
  );

  if (edits) await runEditChecks(client);

  console.log(`${passed} passed, ${failed} failed`);
  return failed ? 1 : 0;
}

async function runEditChecks(client) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fluxgate-sdk-'));
  const colours = [
    [200, 40, 40],
    [40, 200, 40],
    [40, 40, 200],
  ];
  const pngs = colours.map((c) => makePng(256, 256, c));
  const paths = pngs.map((png, i) => {
    const p = path.join(dir, `ref${i}.png`);
    fs.writeFileSync(p, png);
    return p;
  });

  const edits = [
    [
      'edit flux-2-klein-4b stream: true -> image_edit.completed',
      async () => {
        const stream = await client.images.edit({ model: 'flux-2-klein-4b', image: fs.createReadStream(paths[0]), prompt: 'make it night', stream: true });
        let done;
        for await (const event of stream) if (event.type === 'image_edit.completed') done = event;
        expect(done, 'an image_edit.completed event');
        return checkImageBytes(Buffer.from(done.b64_json, 'base64'), null);
      },
    ],
    [
      'edit flux-2-klein-4b response_format=b64_json',
      async () => {
        const resp = await client.images.edit({ model: 'flux-2-klein-4b', image: await toFile(pngs[2], 'ref.png'), prompt: 'add a hat', response_format: 'b64_json' });
        return checkImageBytes(Buffer.from(resp.data[0].b64_json, 'base64'), null);
      },
    ],
    // fs.ReadStream bodies make the SDK stream the multipart body: Transfer-Encoding: chunked, no Content-Length.
    [
      'edit flux-kontext-pro image=fs.createReadStream (chunked)',
      async () =>
        checkImagesResponse(
          await client.images.edit({ model: 'flux-kontext-pro', image: fs.createReadStream(paths[0]), prompt: 'make it night time' }),
        ),
    ],
    [
      'edit flux-2-pro image[]=3 x fs.createReadStream (chunked)',
      async () =>
        checkImagesResponse(
          await client.images.edit({
            model: 'flux-2-pro',
            image: paths.map((p) => fs.createReadStream(p)),
            prompt: 'combine these three into one scene',
          }),
        ),
    ],
    [
      'edit flux-2-klein-4b image=toFile(png)',
      async () =>
        checkImagesResponse(
          await client.images.edit({
            model: 'flux-2-klein-4b',
            image: await toFile(pngs[1], 'ref.png', { type: 'image/png' }),
            prompt: 'add a hat',
          }),
        ),
    ],
    [
      'edit flux-2-klein-4b image[]=3 x toFile (no type, odd names)',
      async () =>
        checkImagesResponse(
          await client.images.edit({
            model: 'flux-2-klein-4b',
            image: await Promise.all(pngs.map((png, i) => toFile(png, `reference-${i}.bin`))),
            prompt: 'combine these three into one scene',
          }),
        ),
    ],
    [
      'edit flux-kontext-pro image[]=3 files -> BadRequestError',
      () =>
        expectApiError(
          async () =>
            client.images.edit({
              model: 'flux-kontext-pro',
              image: await Promise.all(pngs.map((png, i) => toFile(png, `ref${i}.png`, { type: 'image/png' }))),
              prompt: 'too many',
            }),
          OpenAI.BadRequestError,
          400,
          { paramPrefix: 'image' },
        ),
    ],
  ];
  await pool(
    6,
    edits.map(([name, fn]) => () => check(name, fn)),
  );
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(e);
    console.log(`${passed} passed, ${failed + 1} failed`);
    process.exit(1);
  },
);
