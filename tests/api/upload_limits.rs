//! Bounds on what an edit may make the gateway hold: references counted per model as they arrive,
//! a per-request total, a process-wide spool cap, and a spool directory the gateway owns.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine;
use bfl_sim::SimConfig;
use bytes::Bytes;
use serde_json::json;

use crate::helpers::{TestApp, spawn_with, wait_for};
use crate::uploads::{BOUNDARY, RawEdit, RawReply, file, filler_png, multipart_pieces, noisy_png, png, text};

fn sim() -> SimConfig {
    SimConfig { time_scale: 0.02, ..SimConfig::default() }
}

/// The most the spool held while a request ran: files in the directory, bytes in them, and bytes
/// the gateway counted against its spool cap.
#[derive(Debug, Default, Clone, Copy)]
struct Peak {
    files: u64,
    bytes: u64,
    counted: u64,
}

/// Watches the spool directory (every millisecond) until `stop`.
struct Watch {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Peak>,
}

impl Watch {
    fn start(app: &TestApp) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let dir = app.spool_dir().to_owned();
        let uploads = app.state.uploads.clone();
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let mut peak = Peak::default();
            while !stopping.load(Ordering::Relaxed) {
                let (mut files, mut bytes) = (0, 0);
                for entry in std::fs::read_dir(&dir).expect("spool dir").flatten() {
                    files += 1;
                    bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
                }
                peak.files = peak.files.max(files);
                peak.bytes = peak.bytes.max(bytes);
                peak.counted = peak.counted.max(uploads.spooled_bytes());
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            peak
        });
        Watch { stop, task }
    }

    async fn finish(self) -> Peak {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("watcher")
    }
}

/// Waits (bounded) until the spool is empty and uncounted, then asserts it.
async fn assert_spool_empty(app: &TestApp) {
    wait_for(|| app.spool_files() == 0 && app.state.uploads.spooled_bytes() == 0).await;
    assert_eq!(app.spool_files(), 0, "no spool file outlives its request");
    assert_eq!(app.state.uploads.spooled_bytes(), 0, "every spooled byte was given back");
}

fn files(count: usize, file: &Bytes) -> Vec<(&'static str, Result<String, Bytes>)> {
    (0..count).map(|_| ("image[]", Err(file.clone()))).collect()
}

fn field(name: &'static str, value: &str) -> (&'static str, Result<String, Bytes>) {
    (name, Ok(value.to_owned()))
}

fn assert_refused(reply: &RawReply, status: u16, param: Option<&str>, words: &[&str]) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.body["error"]["param"].as_str(), param, "{}", reply.body);
    let message = reply.body["error"]["message"].as_str().unwrap_or_default();
    for word in words {
        assert!(message.contains(word), "{message:?} should mention {word:?}");
    }
}

#[tokio::test]
async fn sixteen_references_of_19_mb_to_klein_never_spool_more_than_the_model_takes() {
    let app = spawn_with(sim(), Vec::new()).await;
    let reference = filler_png(19 * 1024 * 1024);
    let mut parts = vec![field("model", "flux-2-klein-4b"), field("prompt", "merge them")];
    parts.extend(files(16, &reference));
    let watch = Watch::start(&app);
    // Chunked, as the Node SDK streams files: no Content-Length to refuse up front.
    let reply = RawEdit::open(app.addr(), None).await.stream(multipart_pieces(parts)).await;
    let peak = watch.finish().await;
    assert_refused(&reply, 400, Some("image"), &["flux-2-klein-4b takes at most 4 reference images, got 5"]);
    let size = reference.len() as u64;
    assert!(peak.bytes > 0, "the watcher saw the spool at work: {peak:?}");
    assert!(peak.files <= 5 && peak.bytes <= 5 * size, "at most limit + 1 references on disk: {peak:?}");
    assert!(peak.counted <= 5 * size, "{peak:?}");
    assert_spool_empty(&app).await;
    assert_eq!(app.sim.submit_attempts(), 0);
}

#[tokio::test]
async fn the_model_is_applied_whether_it_comes_before_or_after_the_files() {
    let app = spawn_with(sim(), vec![("uploads.memory_threshold", 1024.into())]).await;
    let reference = filler_png(2 * 1024 * 1024);
    let size = reference.len() as u64;

    // Model first: the fifth file is refused before a byte of it is spooled.
    let mut first = vec![field("model", "flux-2-klein-4b"), field("prompt", "p")];
    first.extend(files(5, &reference));
    let first = RawEdit::open(app.addr(), None).await.stream(multipart_pieces(first)).await;
    assert_refused(&first, 400, Some("image"), &["flux-2-klein-4b takes at most 4 reference images, got 5"]);

    // Model last: the same refusal, the moment `model` arrives.
    let mut last = vec![field("prompt", "p")];
    last.extend(files(5, &reference));
    last.push(field("model", "flux-2-klein-4b"));
    let last = RawEdit::open(app.addr(), None).await.stream(multipart_pieces(last)).await;
    assert_eq!((last.status, &last.body["error"]), (first.status, &first.body["error"]), "same error");

    // Model last with sixteen: no model takes more than 8, so the ninth is never spooled.
    let mut many = vec![field("prompt", "p")];
    many.extend(files(16, &reference));
    many.push(field("model", "flux-2-klein-4b"));
    let watch = Watch::start(&app);
    let reply = RawEdit::open(app.addr(), None).await.stream(multipart_pieces(many)).await;
    let peak = watch.finish().await;
    assert_refused(&reply, 400, Some("image"), &["no model takes more than 8 reference images, got 9"]);
    assert!(peak.files <= 9 && peak.bytes <= 9 * size, "{peak:?}");

    // A generation-only model named first: the first file is refused, as parse_edit would.
    let gen_only =
        vec![field("model", "flux-pro-1.1"), field("prompt", "p"), ("image", Err(reference.clone()))];
    let reply = RawEdit::open(app.addr(), None).await.stream(multipart_pieces(gen_only)).await;
    assert_refused(&reply, 400, Some("model"), &["generates only"]);

    // Within the limit, model last, real images: accepted.
    let mut fine =
        vec![text("prompt", "p"), file("image[]", noisy_png(100, 100)), file("image[]", png(64, 64))];
    fine.push(text("model", "flux-2-klein-4b"));
    let reply = app.edit(fine).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(app.sim.submit_attempts(), 1, "only the valid edit reached BFL");
    app.assert_settles().await;
    assert_spool_empty(&app).await;
}

#[tokio::test]
async fn the_json_form_counts_references_per_model_before_decoding_them() {
    let app = spawn_with(sim(), Vec::new()).await;
    let data_url =
        format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png(64, 64)));
    let images: Vec<_> = (0..5).map(|_| json!({"image_url": data_url})).collect();
    let reply = app
        .post_json("/v1/images/edits", &json!({"model": "flux-2-klein-4b", "prompt": "p", "images": images}))
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.error_param(), Some("image"));
    let message = reply.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("flux-2-klein-4b takes at most 4 reference images, got 5"), "{message}");
    let images: Vec<_> = (0..9).map(|_| json!({"image_url": data_url})).collect();
    let reply = app.post_json("/v1/images/edits", &json!({"prompt": "p", "images": images})).await;
    assert_eq!((reply.status, reply.error_param()), (400, Some("image")), "{}", reply.body);
    assert_eq!(app.sim.submit_attempts(), 0);
    assert_eq!(app.state.uploads.json_bytes_held(), 0, "JSON bodies are given back");
}

#[tokio::test]
async fn a_declared_length_over_the_request_cap_is_refused_before_the_body_is_read() {
    let app = spawn_with(sim(), Vec::new()).await;
    let mut edit = RawEdit::open(app.addr(), Some(200 * 1024 * 1024)).await;
    edit.send(format!("--{BOUNDARY}\r\n").as_bytes()).await.expect("a few bytes");
    let reply = edit.reply().await;
    assert_refused(&reply, 413, None, &["larger than 134217728 bytes"]);
    assert_eq!(reply.header("x-should-retry"), Some("false"));
    assert_eq!(app.sim.submit_attempts(), 0);
    assert_spool_empty(&app).await;
}

#[tokio::test]
async fn a_streamed_body_past_the_request_cap_is_cut_off_with_413() {
    let app = spawn_with(
        sim(),
        vec![
            ("uploads.max_request_bytes", 600_000.into()),
            ("uploads.max_file_bytes", 500_000.into()),
            ("uploads.memory_threshold", 1024.into()),
        ],
    )
    .await;
    let reference = filler_png(250_000);
    let mut parts = vec![field("model", "flux-2-pro"), field("prompt", "p")];
    parts.extend(files(4, &reference));
    let reply = RawEdit::open(app.addr(), None).await.stream(multipart_pieces(parts)).await;
    assert_refused(&reply, 413, None, &["larger than 600000 bytes"]);
    assert_eq!(app.sim.submit_attempts(), 0);
    assert_spool_empty(&app).await;
}

#[tokio::test]
async fn a_full_spool_is_a_503_with_retry_after_and_room_comes_back_with_the_files() {
    let app = spawn_with(
        sim(),
        vec![
            ("uploads.memory_threshold", 1024.into()),
            ("uploads.max_file_bytes", 1_048_576.into()),
            ("uploads.max_spool_bytes", 1_200_000.into()),
        ],
    )
    .await;
    let reference = filler_png(700_000);
    // A: one whole file spooled, then the next part starts and the client goes quiet.
    let mut holding = RawEdit::open(app.addr(), None).await;
    let mut pieces = multipart_pieces(vec![field("model", "flux-2-pro"), field("prompt", "p")]);
    pieces.pop(); // no closing boundary
    pieces.extend(multipart_pieces(files(1, &reference)).into_iter().take(3));
    pieces.push(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image[]\"; filename=\"g.png\"\r\n\r\n"
        )
        .into(),
    );
    for piece in pieces {
        holding.send(&piece).await.expect("sent");
    }
    wait_for(|| app.state.uploads.spooled_bytes() >= 700_000).await;
    assert_eq!(app.state.uploads.spooled_bytes(), 700_000, "A's file is counted while A lasts");

    // B: its file would take the spool past 1.2 MB.
    let mut parts = vec![field("model", "flux-2-pro"), field("prompt", "p")];
    parts.extend(files(1, &reference));
    let reply = RawEdit::open(app.addr(), None).await.stream(multipart_pieces(parts)).await;
    assert_refused(&reply, 503, Some("image[0]"), &["retry"]);
    assert_eq!(reply.header("retry-after"), Some("5"));
    assert_eq!(reply.header("x-should-retry"), Some("true"));
    assert_eq!(reply.body["error"]["type"], "server_error");
    assert_eq!(app.state.uploads.spooled_bytes(), 700_000, "B's partial file was given back");

    // A leaves: its file goes, and with it its share of the spool.
    drop(holding);
    assert_spool_empty(&app).await;
    let reply = app
        .edit(vec![text("model", "flux-2-pro"), text("prompt", "p"), file("image", noisy_png(300, 300))])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(app.sim.submit_attempts(), 1);
    app.assert_settles().await;
    assert_spool_empty(&app).await;
}

#[tokio::test]
async fn the_spool_dir_is_created_and_cleared_of_our_leftovers_at_start_up() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("spool");
    std::fs::create_dir_all(dir.join("nested")).expect("dirs");
    for name in ["fluxgate-ref-a1b2c3", "fluxgate-ref-zz", "notes.txt", "nested/fluxgate-ref-inner"] {
        std::fs::write(dir.join(name), b"left over").expect("file");
    }
    let app = spawn_with(sim(), vec![("uploads.spool_dir", dir.to_string_lossy().into_owned().into())]).await;
    assert_eq!(app.spool_dir(), dir);
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    left.sort();
    assert_eq!(left, ["nested", "notes.txt"], "only our own files go");
    assert!(dir.join("nested/fluxgate-ref-inner").exists(), "subdirectories are left alone");

    let fresh = root.path().join("a/b/spool");
    let _app =
        spawn_with(sim(), vec![("uploads.spool_dir", fresh.to_string_lossy().into_owned().into())]).await;
    assert!(fresh.is_dir(), "created at start-up");
}
