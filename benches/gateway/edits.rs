//! `edits`: 16 concurrent `POST /v1/images/edits`, each with eight distinct 2048×2048 noise PNGs
//! (~12 MB apiece, over 1.5 GB in flight), while the gateway's VmRSS is sampled every ~20 ms.
//! The figure is its peak resident memory against the bytes uploaded at once: memory per edit must
//! not grow with upload size beyond fixed buffers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use crate::client;
use crate::load;
use crate::procs::{self, SimOptions};
use crate::report::{Fig, Report, Target};

const REQUESTS: usize = 16;
const IMAGES: usize = 8;
const SIDE: u32 = 2048;
const MODEL: &str = "flux-2-pro";
const TARGET_BYTES: f64 = 150e6;
/// Request bodies go out in pieces of this size, as a client streaming from disk would send them.
const PIECE: usize = 64 * 1024;

pub async fn run(report: &mut Report) -> Result<(), String> {
    eprintln!("edits: encoding {IMAGES} {SIDE}×{SIDE} noise PNGs…");
    let mut encoders = Vec::new();
    for k in 0..IMAGES {
        encoders.push(tokio::task::spawn_blocking(move || noise_png(k as u64)));
    }
    let mut images = Vec::new();
    for e in encoders {
        images.push(e.await.map_err(|e| e.to_string())??);
    }
    let images = Arc::new(images);

    let sim = procs::simulator(&SimOptions { name: "edits", time_scale: 0.05, task_cap: 100_000 })?;
    let cap = [("FLUXGATE__UPSTREAM__TASK_CAP", "100000")];
    let mut gw = procs::gateway("edits", &sim.base, &cap).await?;
    let idle = gw.proc.memory().ok_or("cannot read the gateway's /proc status")?;

    let peak = Arc::new(AtomicU64::new(idle.rss_kb));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop, pid) = (Arc::clone(&peak), Arc::clone(&stop), gw.proc.pid());
        tokio::spawn(async move {
            let mut samples = 0u32;
            // Bounded: the scenario's own time limit is far below 10,000 × 20 ms.
            while !stop.load(Ordering::Relaxed) && samples < 10_000 {
                if let Some(m) = procs::memory_of(pid) {
                    peak.fetch_max(m.rss_kb, Ordering::Relaxed);
                }
                samples += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            samples
        })
    };

    let in_flight: u64 = (0..REQUESTS).map(|i| body(i, &images).1).sum();
    eprintln!("edits: {REQUESTS} concurrent edits, {:.2} GB of uploads…", in_flight as f64 / 1e9);
    let http = client::http();
    let base = gw.base.clone();
    let batch = load::run(REQUESTS, REQUESTS, move |i| {
        let (http, base, images) = (http.clone(), base.clone(), Arc::clone(&images));
        async move { edit(&http, &base, i, &images).await }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap_or(0);
    gw.proc.check_alive()?;
    let end = gw.proc.memory().ok_or("cannot read the gateway's /proc status")?;
    let sim_mem = sim.proc.memory().unwrap_or_default();
    let peak_kb = peak.load(Ordering::Relaxed).max(end.hwm_kb);

    let under = Target::new("< 150 MB", peak_kb as f64 * 1024.0 < TARGET_BYTES);
    report.add(
        "edits",
        "peak RSS during edits",
        Fig::kb(peak_kb),
        "upload bytes in flight",
        Fig::Bytes(in_flight as f64),
        under,
    );
    report.add(
        "edits",
        "peak RSS during edits",
        Fig::kb(peak_kb),
        "simulator VmHWM (same images)",
        Fig::kb(sim_mem.hwm_kb),
        None,
    );
    report.add(
        "edits",
        "RSS after the edits",
        Fig::kb(end.rss_kb),
        "its own RSS idle, before",
        Fig::kb(idle.rss_kb),
        None,
    );
    report.note(
        "edits",
        format!(
            "{} of {REQUESTS} edits ok in {:.1} s; {samples} RSS samples",
            REQUESTS - batch.errors(),
            batch.wall.as_secs_f64()
        ),
    );
    if let Some(e) = batch.first_error() {
        report.note("edits", format!("{} failed; first: {e}", batch.errors()));
    }
    Ok(())
}

/// A `SIDE`×`SIDE` RGB PNG of seeded noise (incompressible, so the file is ~12 MB).
fn noise_png(seed: u64) -> Result<Bytes, String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut pixels = vec![0u8; (SIDE * SIDE * 3) as usize];
    rng.fill(&mut pixels);
    let img = image::RgbImage::from_raw(SIDE, SIDE, pixels).ok_or("pixel buffer size")?;
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).map_err(|e| e.to_string())?;
    Ok(Bytes::from(out.into_inner()))
}

/// The multipart body of edit `i` as pieces (images shared, not copied), and its total length.
fn body(i: usize, images: &[Bytes]) -> (Vec<Bytes>, u64) {
    let boundary = boundary(i);
    let mut parts = Vec::new();
    let field = |name: &str, value: &str| {
        Bytes::from(format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ))
    };
    parts.push(field("model", MODEL));
    parts.push(field("prompt", &format!("bench edit {i}: blend these")));
    parts.push(field("response_format", "url"));
    for (k, img) in images.iter().enumerate() {
        parts.push(Bytes::from(format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"image[]\"; filename=\"noise{k}.png\"\r\n\
             Content-Type: image/png\r\n\r\n"
        )));
        let mut at = 0;
        while at < img.len() {
            let end = (at + PIECE).min(img.len());
            parts.push(img.slice(at..end));
            at = end;
        }
        parts.push(Bytes::from_static(b"\r\n"));
    }
    parts.push(Bytes::from(format!("--{boundary}--\r\n")));
    let len = parts.iter().map(|p| p.len() as u64).sum();
    (parts, len)
}

fn boundary(i: usize) -> String {
    format!("fluxgate-bench-boundary-{i}")
}

/// One streamed edit request; Ok when the reply carries a URL.
async fn edit(http: &reqwest::Client, gateway: &str, i: usize, images: &[Bytes]) -> Result<(), String> {
    let (parts, len) = body(i, images);
    let stream = futures_util::stream::iter(parts.into_iter().map(Ok::<Bytes, std::io::Error>));
    let resp = http
        .post(format!("{gateway}/v1/images/edits"))
        .header("content-type", format!("multipart/form-data; boundary={}", boundary(i)))
        .header("content-length", len)
        .body(reqwest::Body::wrap_stream(stream))
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .map_err(|e| format!("edit {i}: {e}"))?;
    let status = resp.status();
    let reply: Value = resp.json().await.unwrap_or(Value::Null);
    if status.is_success() && reply["data"][0]["url"].is_string() {
        Ok(())
    } else {
        Err(format!("edit {i}: gateway answered {status}: {}", client::excerpt(&reply)))
    }
}
