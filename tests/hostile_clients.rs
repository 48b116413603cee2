//! The real binary (`fluxgate demo`, gateway + built-in simulator) against clients that misbehave:
//! trickled headers, stalled bodies, and a SIGTERM with requests half-sent and jobs running.
//! Every loop here is bounded and stops by itself; all traffic stays on loopback.

#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Demo {
    child: Child,
    base: String,
    sim: String,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Starts `fluxgate demo` with `env` and waits (bounded) for its "ready" line.
fn demo(time_scale: &str, env: &[(&str, String)]) -> Demo {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fluxgate"));
    for (key, _) in std::env::vars() {
        if key.starts_with("FLUXGATE__") || key == "BFL_API_KEY" {
            cmd.env_remove(key);
        }
    }
    cmd.args(["demo", "--time-scale", time_scale])
        .env("FLUXGATE__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (key, value) in env {
        cmd.env(key, value);
    }
    let mut child = cmd.spawn().expect("fluxgate demo starts");
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("fluxgate demo ready: ") {
                let _ = tx.send(rest.to_owned());
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).expect("the demo said it is ready");
    // "http://127.0.0.1:PORT (BFL simulator on http://127.0.0.1:SIM)"
    let base = line.split_whitespace().next().expect("base url").to_owned();
    let sim = line.rsplit("on ").next().expect("simulator").trim_end_matches(')').to_owned();
    Demo { child, base, sim }
}

impl Demo {
    fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    async fn sim_stats(&self) -> Value {
        reqwest::get(format!("{}/sim/stats", self.sim))
            .await
            .expect("simulator answers")
            .json()
            .await
            .expect("json")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_connections_trickling_headers_are_closed_within_the_header_timeout_while_others_are_served()
 {
    let app = demo("0.05", &[("FLUXGATE__SERVER__HEADER_TIMEOUT_MS", "1000".into())]);
    let header_timeout = Duration::from_millis(1000);
    let http = reqwest::Client::new();
    let mut tricklers = Vec::new();
    for i in 0..200u64 {
        let addr = app.addr();
        // Plain blocking sockets, one thread each: the client's own scheduling stays out of the timing.
        tricklers.push(std::thread::spawn(move || {
            use std::io::{ErrorKind, Read, Write};
            // Spread over 0.4 s: a burst of 200 SYNs at one instant would measure the kernel's
            // SYN handling (a 1 s retransmit), not the gateway.
            std::thread::sleep(Duration::from_millis(2 * i));
            let opened = Instant::now();
            let mut conn = std::net::TcpStream::connect(addr).expect("connects");
            conn.write_all(b"POST /v1/images/generations HTTP/1.1\r\nhost: x\r\nx-slow: ").expect("writes");
            conn.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
            let mut buf = [0u8; 256];
            // One byte every 100 ms, for at most 6 s: the gateway must hang up long before.
            for _ in 0..60 {
                match conn.read(&mut buf) {
                    Ok(0) => return opened.elapsed(),
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        if conn.write_all(b"a").is_err() {
                            return opened.elapsed();
                        }
                    }
                    Err(_) => return opened.elapsed(),
                }
            }
            opened.elapsed()
        }));
    }
    // Meanwhile a real client is served: a probe and a whole generation.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let health = http.get(format!("{}/healthz", app.base)).send().await.expect("answers");
    assert_eq!(health.status(), 200);
    let generated = http
        .post(format!("{}/v1/images/generations", app.base))
        .json(&json!({"model": "flux-2-klein-4b", "prompt": "a lighthouse"}))
        .send()
        .await
        .expect("answers");
    assert_eq!(generated.status(), 200);
    let mut lasted = Vec::new();
    for trickler in tricklers {
        lasted.push(trickler.join().expect("thread"));
    }
    lasted.sort();
    for lasted in lasted {
        assert!(
            lasted <= header_timeout + Duration::from_secs(1),
            "a trickling connection lasted {lasted:?}"
        );
    }
}

#[tokio::test]
async fn a_body_that_stalls_gets_408_and_a_declared_oversize_body_413_before_it_is_read() {
    let app = demo("0.05", &[("FLUXGATE__SERVER__BODY_TIMEOUT_MS", "500".into())]);
    let mut conn = TcpStream::connect(app.addr()).await.expect("connects");
    conn.write_all(
        b"POST /v1/images/generations HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"prompt\":",
    )
    .await
    .expect("writes");
    let reply = read_reply(&mut conn).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("request_timeout"), "{reply}");

    let mut conn = TcpStream::connect(app.addr()).await.expect("connects");
    conn.write_all(
        b"POST /v1/images/generations HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 99999999999\r\n\r\n{",
    )
    .await
    .expect("writes");
    let reply = read_reply(&mut conn).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert_eq!(app.sim_stats().await["submit_attempts"], 0);
}

/// Reads one reply head and body (bounded at 10 s and 64 KiB).
async fn read_reply(conn: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < 65536 {
        match tokio::time::timeout_at(until, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse::<usize>().ok());
            if length.is_some_and(|n| body.len() >= n) {
                break;
            }
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn sigterm_with_a_half_sent_request_and_twenty_running_jobs_finishes_the_jobs_and_exits_zero() {
    let (drain, grace) = (Duration::from_millis(300), Duration::from_secs(20));
    let mut app = demo(
        "1",
        &[
            ("FLUXGATE__SERVER__DRAIN_DELAY_MS", drain.as_millis().to_string()),
            ("FLUXGATE__SERVER__SHUTDOWN_GRACE_SECS", grace.as_secs().to_string()),
        ],
    );
    let http = reqwest::Client::new();
    let jobs: Vec<_> = (0..20)
        .map(|i| {
            let request = http
                .post(format!("{}/v1/images/generations", app.base))
                .json(&json!({"model": "flux-2-klein-4b", "prompt": format!("job {i} [slow:2500]")}));
            tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    let mut half = TcpStream::connect(app.addr()).await.expect("connects");
    half.write_all(b"POST /v1/images/generations HTTP/1.1\r\nhost: x\r\ncontent-le").await.expect("writes");
    let mut running = false;
    for _ in 0..200 {
        if app.sim_stats().await["active"] == 20 {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(running, "the twenty jobs are running upstream");
    let pid = app.child.id().to_string();
    let signalled = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs").success());
    for job in jobs {
        assert_eq!(job.await.expect("task").expect("answered"), 200, "a running job completed");
    }
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), half.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "the half-sent request was closed: {closed:?}");
    let mut exited = None;
    while signalled.elapsed() < drain + grace + Duration::from_secs(5) {
        if let Some(status) = app.child.try_wait().expect("waitable") {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = exited.expect("the process exited within drain delay + grace");
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_not_the_header_timeout() {
    let app = demo(
        "0.05",
        &[
            ("FLUXGATE__SERVER__HEADER_TIMEOUT_MS", "300".into()),
            ("FLUXGATE__SERVER__IDLE_TIMEOUT_MS", "1500".into()),
        ],
    );
    let mut conn = TcpStream::connect(app.addr()).await.expect("connects");
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("writes");
    let reply = read_reply(&mut conn).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let idle_from = Instant::now();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await;
    let idled = idle_from.elapsed();
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "the idle connection was closed: {closed:?}");
    assert!(
        idled >= Duration::from_millis(1400),
        "kept while idle for the idle timeout, not the header timeout: {idled:?}"
    );
    assert!(idled <= Duration::from_millis(2500), "closed soon after the idle timeout: {idled:?}");
}

#[tokio::test]
async fn a_multipart_edit_that_stalls_mid_file_gets_408_and_leaves_no_spool_file() {
    let spool = tempfile::tempdir().expect("temp dir");
    let app = demo(
        "0.05",
        &[
            ("FLUXGATE__SERVER__BODY_TIMEOUT_MS", "500".into()),
            ("FLUXGATE__UPLOADS__SPOOL_DIR", spool.path().display().to_string()),
            ("FLUXGATE__UPLOADS__MEMORY_THRESHOLD", "1024".into()),
        ],
    );
    let boundary = "fluxgatestall";
    let mut head = format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"model\"\r\n\r\nflux-2-klein-4b\r\n\
         --{boundary}\r\ncontent-disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\
         content-type: image/png\r\n\r\n"
    )
    .into_bytes();
    // A PNG signature and a header chunk for 512x512, then more bytes than the memory threshold
    // (so the file is spooled), then nothing.
    head.extend_from_slice(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\x02\0\0\0\x02\0\x08\x02\0\0\0");
    head.extend_from_slice(&[0u8; 4]);
    // An IDAT chunk that declares 100,000 bytes, of which 8 KiB arrive.
    head.extend_from_slice(&100_000u32.to_be_bytes());
    head.extend_from_slice(b"IDAT");
    head.extend_from_slice(&vec![7u8; 8192]);
    let mut conn = TcpStream::connect(app.addr()).await.expect("connects");
    let request = format!(
        "POST /v1/images/edits HTTP/1.1\r\nhost: x\r\ncontent-type: multipart/form-data; boundary={boundary}\r\n\
         content-length: 10000000\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).await.expect("writes");
    conn.write_all(&head).await.expect("writes");
    let reply = read_reply(&mut conn).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    let left = std::fs::read_dir(spool.path()).expect("spool dir").count();
    assert_eq!(left, 0, "no spool file is left behind");
    assert_eq!(app.sim_stats().await["submit_attempts"], 0);
}

#[tokio::test]
async fn a_second_sigterm_exits_at_once_without_waiting_for_running_jobs() {
    let mut app = demo(
        "1",
        &[
            ("FLUXGATE__SERVER__DRAIN_DELAY_MS", "100".into()),
            ("FLUXGATE__SERVER__SHUTDOWN_GRACE_SECS", "120".into()),
        ],
    );
    let http = reqwest::Client::new();
    let request = http
        .post(format!("{}/v1/images/generations", app.base))
        .json(&json!({"model": "flux-2-klein-4b", "prompt": "long [slow:50000]"}));
    let job = tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) });
    let mut running = false;
    for _ in 0..200 {
        if app.sim_stats().await["active"] == 1 {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(running, "the job runs upstream");
    let pid = app.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs").success());
    // The first signal starts a drain that would wait for the 50 s job; the second ends it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(app.child.try_wait().expect("waitable").is_none(), "still draining after the first signal");
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs").success());
    let mut exited = None;
    for _ in 0..100 {
        if let Some(status) = app.child.try_wait().expect("waitable") {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = exited.expect("the second signal ended the process within 5 s");
    assert!(!status.success(), "an abandoning exit is not a clean one: {status:?}");
    job.abort();
}
