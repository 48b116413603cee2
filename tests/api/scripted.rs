//! A hand-written HTTP upstream for answers the simulator cannot give (redirects, arbitrary
//! result URLs): each request is answered by a script, and every request it got is recorded,
//! with whether it carried an `x-key` header.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request the upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub x_key: bool,
}

pub struct Scripted {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// `127.0.0.1:PORT`, as an allow-list entry.
    pub host: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Starts an upstream whose `script(method, path, own_base)` gives each raw HTTP response.
pub async fn scripted(script: impl Fn(&str, &str, &str) -> Vec<u8> + Send + Sync + 'static) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("address");
    let base = format!("http://{addr}");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (record, own, script) = (seen.clone(), base.clone(), Arc::new(script));
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let (record, own, script) = (record.clone(), own.clone(), script.clone());
            tokio::spawn(async move {
                let Some((method, path, x_key)) = read_request(&mut conn).await else { return };
                record.lock().unwrap().push(Seen { method: method.clone(), path: path.clone(), x_key });
                let _ = conn.write_all(&script(&method, &path, &own)).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    Scripted { base, host: addr.to_string(), seen }
}

/// Reads one request (head and a Content-Length body): (method, path, has `x-key`).
async fn read_request(conn: &mut tokio::net::TcpStream) -> Option<(String, String, bool)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut first = head.lines().next()?.split(' ');
    let (method, path) = (first.next()?.to_ascii_uppercase(), first.next()?.to_owned());
    let x_key = head.lines().any(|l| l.starts_with("x-key:"));
    Some((method, path, x_key))
}

/// A complete response with `body`.
pub fn reply(status: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

pub fn json(body: serde_json::Value) -> Vec<u8> {
    reply("200 OK", "application/json", body.to_string().as_bytes())
}

pub fn redirect(location: &str) -> Vec<u8> {
    format!("HTTP/1.1 307 Temporary Redirect\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .into_bytes()
}

/// A BFL-like upstream: a submit answers with a `polling_url` back to itself, a poll with `Ready`
/// and `sample`, and GET `/image` with `image` (a PNG's bytes, say).
pub async fn finishing_with(
    sample: impl Fn(&str) -> String + Send + Sync + 'static,
    image: Vec<u8>,
) -> Scripted {
    scripted(move |method, path, own| match (method, path) {
        ("POST", _) => json(serde_json::json!({"id": "t1", "polling_url": format!("{own}/poll?id=t1")})),
        ("GET", p) if p.starts_with("/poll") => {
            json(serde_json::json!({"id": "t1", "status": "Ready", "result": {"sample": sample(own)}}))
        }
        ("GET", "/image") => reply("200 OK", "image/png", &image),
        _ => reply("404 Not Found", "application/json", b"{\"detail\":\"Not Found\"}"),
    })
    .await
}
