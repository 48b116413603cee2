//! The binary's public interface: environment variable names, start-up validation with a
//! one-line reason, and a clean exit on SIGTERM.

// Test and benchmark code drives servers from outside: plain spawns and sleeps are fine here.
#![allow(clippy::disallowed_methods)]
// A failed expectation in a test is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn fluxgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fluxgate"));
    // Start from a clean slate whatever the machine's environment holds.
    for (key, _) in std::env::vars() {
        if key.starts_with("FLUXGATE__") || key == "BFL_API_KEY" {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "info");
    // Usage in memory: a test leaves no journal behind.
    cmd.env("FLUXGATE__USAGE__PATH", "");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("the binary runs")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

#[test]
fn serve_without_a_bfl_key_exits_nonzero_with_one_line_naming_the_variable() {
    let out = run(fluxgate().arg("serve"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().expect("a reason");
    assert!(last.contains("FLUXGATE__UPSTREAM__KEYS"), "{stderr}");
}

#[test]
fn invalid_settings_are_refused_at_start_up() {
    let cases = [
        ("FLUXGATE__SERVER__LISTEN", "not-an-address", "server.listen"),
        ("FLUXGATE__UPSTREAM__BASE_URL", "https://evil.example.com", "upstream.base_url"),
        ("FLUXGATE__UPSTREAM__ALLOWED_HOSTS", "*", "upstream.allowed_hosts"),
        // The allow-list matches ports: an allowed host on another port is not the same upstream.
        ("FLUXGATE__UPSTREAM__BASE_URL", "https://api.bfl.ai:8443", "upstream.base_url"),
        ("FLUXGATE__SERVER__DEFAULT_MODEL", "flux-9", "server.default_model"),
        // A typo is not silently ignored: the variable names no key.
        ("FLUXGATE__SERVER__LISTN", "127.0.0.1:1", "FLUXGATE__SERVER__LISTN"),
        ("FLUXGATE__TELEMETRY__LOG_FORMAT", "xml", "telemetry.log_format"),
        // Blank client tokens would be dropped, leave the list empty and turn authentication off.
        ("FLUXGATE__SERVER__API_KEYS", " , ", "server.api_keys"),
        ("FLUXGATE__SERVER__API_KEYS", "tok-a, ,tok-b", "server.api_keys"),
        ("FLUXGATE__SERVER__API_KEYS", "tok-a,", "server.api_keys"),
        ("FLUXGATE__DELIVERY__STORE", "ftp", "delivery.store"),
        ("FLUXGATE__DELIVERY__STORE", "local", "delivery.local_dir"),
    ];
    for (var, value, named) in cases {
        let out = run(fluxgate().arg("serve").env("FLUXGATE__UPSTREAM__KEYS", "k").env(var, value));
        assert!(!out.status.success(), "{var}={value} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.lines().last().is_some_and(|l| l.contains(named)), "{var}: {stderr}");
    }
    let http = run(fluxgate()
        .arg("serve")
        .env("BFL_API_KEY", "k")
        .env("FLUXGATE__UPSTREAM__BASE_URL", "http://api.bfl.ai"));
    assert!(!http.status.success(), "plain http needs FLUXGATE__UPSTREAM__ALLOW_HTTP");
    let images = tempfile::tempdir().expect("temp dir");
    let unsigned = run(fluxgate()
        .arg("serve")
        .env("FLUXGATE__UPSTREAM__KEYS", "k")
        .env("FLUXGATE__DELIVERY__STORE", "local")
        .env("FLUXGATE__DELIVERY__LOCAL_DIR", images.path()));
    let stderr = String::from_utf8_lossy(&unsigned.stderr);
    assert!(!unsigned.status.success(), "a store without a signing key was accepted");
    assert!(stderr.lines().last().is_some_and(|l| l.contains("delivery.signing_key")), "{stderr}");
}

/// The status of a GET on the gateway at `port`, with `Bearer token` when given.
fn status_of(port: u16, path: &str, token: Option<&str>) -> u16 {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connects");
    conn.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(conn, "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{auth}connection: close\r\n\r\n")
        .expect("writes");
    let mut reply = String::new();
    let _ = conn.read_to_string(&mut reply);
    reply.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line")
}

/// `fluxgate health` against `port` until it succeeds, for at most 20 s.
fn healthy_within_20s(port: u16) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        let out = run(fluxgate().arg("health").env("FLUXGATE__SERVER__LISTEN", format!("127.0.0.1:{port}")));
        if out.status.success() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_reads_every_documented_variable_becomes_ready_and_exits_cleanly_on_sigterm() {
    let port = free_port();
    let images = tempfile::tempdir().expect("temp dir");
    let child = fluxgate()
        .arg("serve")
        .env("FLUXGATE__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("FLUXGATE__UPSTREAM__BASE_URL", "http://127.0.0.1:9")
        .env("FLUXGATE__UPSTREAM__KEYS", "key-one,key-two")
        .env("FLUXGATE__UPSTREAM__ALLOWED_HOSTS", "127.0.0.1:9,localhost")
        .env("FLUXGATE__UPSTREAM__ALLOW_HTTP", "true")
        .env("FLUXGATE__SERVER__API_KEYS", "tok-a,tok-b")
        .env("FLUXGATE__DELIVERY__STORE", "local")
        .env("FLUXGATE__DELIVERY__LOCAL_DIR", images.path())
        .env("FLUXGATE__DELIVERY__SIGNING_KEY", "signing-key-never-logged")
        .env("FLUXGATE__DELIVERY__CORS_ORIGINS", "https://a.example,https://b.example")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut running = Running(child);
    assert!(healthy_within_20s(port), "the gateway answered /healthz on the configured port");
    // Client tokens given as one comma-separated string: each is accepted, nothing else is.
    assert_eq!(status_of(port, "/v1/models", Some("tok-b")), 200);
    assert_eq!(status_of(port, "/v1/models", Some("tok-a")), 200);
    assert_eq!(status_of(port, "/v1/models", Some("tok-a,tok-b")), 401);
    assert_eq!(status_of(port, "/v1/models", None), 401);
    let pid = running.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs").success());
    let status = running.0.wait().expect("exits");
    assert!(status.success(), "SIGTERM is a clean exit: {status:?}");
    let mut log = String::new();
    if let Some(mut stderr) = running.0.stderr.take() {
        use std::io::Read;
        let _ = stderr.read_to_string(&mut log);
    }
    assert!(log.contains("\"keys\":2"), "both keys were read (JSON log lines by default): {log}");
    assert!(!log.contains("key-one") && !log.contains("key-two"), "keys never appear in logs");
    assert!(!log.contains("signing-key-never-logged"), "the signing key never appears in logs");
}

#[test]
fn a_list_variable_that_looks_like_a_number_is_read_as_written() {
    let port = free_port();
    let child = fluxgate()
        .arg("serve")
        .env("FLUXGATE__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("FLUXGATE__UPSTREAM__BASE_URL", "http://127.0.0.1:9")
        .env("FLUXGATE__UPSTREAM__KEYS", "key-one")
        .env("FLUXGATE__UPSTREAM__KEY_CAPS", "48")
        .env("FLUXGATE__UPSTREAM__ALLOWED_HOSTS", "127.0.0.1:9")
        .env("FLUXGATE__UPSTREAM__ALLOW_HTTP", "true")
        .env("FLUXGATE__SERVER__API_KEYS", "0123")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let _running = Running(child);
    assert!(healthy_within_20s(port), "the gateway became ready");
    assert_eq!(status_of(port, "/v1/models", Some("0123")), 200, "the token keeps its leading zero");
    assert_eq!(status_of(port, "/v1/models", Some("123")), 401);
}
