//! Building edit requests by hand: real images of chosen sizes and multipart bodies.

use std::io::Cursor;

use image::{ImageFormat, RgbImage};

/// A real image of `width`×`height` in `format`, with a little texture so it is not trivial.
pub fn image_bytes(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
    let img = RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x ^ y) % 239) as u8])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encodes");
    out.into_inner()
}

pub fn png(width: u32, height: u32) -> Vec<u8> {
    image_bytes(width, height, ImageFormat::Png)
}

/// A PNG whose pixels are noise, so it does not compress: about 3 bytes per pixel.
pub fn noisy_png(width: u32, height: u32) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(9);
    let img = RgbImage::from_fn(width, height, |_, _| image::Rgb([rng.u8(..), rng.u8(..), rng.u8(..)]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).expect("encodes");
    out.into_inner()
}

/// Just a PNG signature and an IHDR chunk claiming `width`×`height`.
pub fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend_from_slice(&13u32.to_be_bytes());
    bytes.extend_from_slice(b"IHDR");
    bytes.extend_from_slice(&width.to_be_bytes());
    bytes.extend_from_slice(&height.to_be_bytes());
    bytes.extend_from_slice(&[8, 2, 0, 0, 0]);
    bytes.extend_from_slice(&[0, 0, 0, 0]); // CRC, not checked by anyone reading headers
    bytes.extend(std::iter::repeat_n(0u8, 4096));
    bytes
}

pub enum Part {
    Text(&'static str, String),
    /// (field name, filename, content type, bytes)
    File(&'static str, &'static str, &'static str, Vec<u8>),
}

pub fn text(name: &'static str, value: &str) -> Part {
    Part::Text(name, value.to_owned())
}

/// A file part with a misleading filename and type: the gateway must look at the bytes.
pub fn file(name: &'static str, bytes: Vec<u8>) -> Part {
    Part::File(name, "upload.bin", "application/octet-stream", bytes)
}

pub const BOUNDARY: &str = "----fluxgate-test-boundary-7MA4YWxkTrZu0gW";

pub fn multipart(parts: Vec<Part>) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match part {
            Part::Text(name, value) => {
                body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                );
                body.extend_from_slice(value.as_bytes());
            }
            Part::File(name, filename, kind, bytes) => {
                body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: {kind}\r\n\r\n")
                        .as_bytes(),
                );
                body.extend_from_slice(&bytes);
            }
        }
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// A PNG that passes every check of the gateway's (header dimensions, chunks walked from IHDR to
/// IEND) without being decodable: `len` bytes in all, nearly all of them one IDAT chunk. Quick to
/// make at any size.
pub fn filler_png(len: usize) -> bytes::Bytes {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(b"IHDR");
    out.extend_from_slice(&512u32.to_be_bytes());
    out.extend_from_slice(&512u32.to_be_bytes());
    out.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
    let data = len - out.len() - 12 - 12;
    out.extend_from_slice(&(data as u32).to_be_bytes());
    out.extend_from_slice(b"IDAT");
    out.resize(out.len() + data, 0x5A);
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(b"IEND");
    out.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(out.len(), len);
    out.into()
}

/// A multipart body as pieces that share their file bytes (a 300 MB body costs one file's memory).
pub fn multipart_pieces(parts: Vec<(&'static str, Result<String, bytes::Bytes>)>) -> Vec<bytes::Bytes> {
    let mut pieces = Vec::new();
    for (name, value) in parts {
        match value {
            Ok(text) => pieces.push(
                format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{text}\r\n")
                    .into(),
            ),
            Err(file) => {
                pieces.push(
                    format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"f.png\"\r\nContent-Type: image/png\r\n\r\n")
                        .into(),
                );
                pieces.push(file);
                pieces.push(bytes::Bytes::from_static(b"\r\n"));
            }
        }
    }
    pieces.push(format!("--{BOUNDARY}--\r\n").into());
    pieces
}

/// An edit request on a plain TCP connection, so a test controls exactly what is sent and when.
pub struct RawEdit {
    reader: tokio::net::tcp::OwnedReadHalf,
    sender: Sender,
}

/// Status, headers (lower-case names) and the JSON body of a reply read off a raw connection.
pub struct RawReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

impl RawEdit {
    /// Sends the head of a multipart edit: with a Content-Length if given, else chunked.
    pub async fn open(addr: &str, content_length: Option<u64>) -> RawEdit {
        use tokio::io::AsyncWriteExt;
        let stream = tokio::net::TcpStream::connect(addr).await.expect("gateway accepts");
        let (reader, mut writer) = stream.into_split();
        let length = match content_length {
            Some(len) => format!("content-length: {len}\r\n"),
            None => "transfer-encoding: chunked\r\n".to_owned(),
        };
        let head = format!(
            "POST /v1/images/edits HTTP/1.1\r\nhost: {addr}\r\ncontent-type: multipart/form-data; boundary={BOUNDARY}\r\n{length}\r\n"
        );
        writer.write_all(head.as_bytes()).await.expect("head sent");
        RawEdit { reader, sender: Sender { writer, chunked: content_length.is_none() } }
    }

    /// Sends body bytes (as one chunk when chunked); an error means the gateway stopped reading.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.sender.send(bytes).await
    }

    /// Sends `pieces` in 64 KiB writes (and the end of a chunked body) while reading the reply,
    /// which may come long before the body is all sent; sending stops once it has.
    pub async fn stream(self, pieces: Vec<bytes::Bytes>) -> RawReply {
        let RawEdit { reader, mut sender } = self;
        let chunked = sender.chunked;
        let sending = async move {
            'send: for piece in pieces {
                for slice in piece.chunks(64 * 1024) {
                    // An error: the gateway stopped reading and closed; its reply is still read.
                    if sender.send(slice).await.is_err() {
                        break 'send;
                    }
                }
            }
            if chunked {
                use tokio::io::AsyncWriteExt;
                let _ = sender.writer.write_all(b"0\r\n\r\n").await;
            }
            // Keep the connection open until the reply is read.
            std::future::pending::<()>().await;
        };
        tokio::select! {
            reply = read_reply(reader) => reply,
            () = sending => unreachable!("sending never ends by itself"),
        }
    }

    /// Reads the reply without sending anything more.
    pub async fn reply(self) -> RawReply {
        let RawEdit { reader, sender } = self;
        let reply = read_reply(reader).await;
        drop(sender);
        reply
    }
}

struct Sender {
    writer: tokio::net::tcp::OwnedWriteHalf,
    chunked: bool,
}

impl Sender {
    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        if self.chunked {
            self.writer.write_all(format!("{:x}\r\n", bytes.len()).as_bytes()).await?;
            self.writer.write_all(bytes).await?;
            self.writer.write_all(b"\r\n").await
        } else {
            self.writer.write_all(bytes).await
        }
    }
}

/// One HTTP/1.1 response with a Content-Length (what the gateway sends for errors), within 30 s.
async fn read_reply(mut reader: tokio::net::tcp::OwnedReadHalf) -> RawReply {
    use tokio::io::AsyncReadExt;
    let reading = async {
        let mut buf = Vec::new();
        let mut block = [0u8; 8192];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let mut lines = head.split("\r\n");
                let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok());
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(n, _)| n == "content-length")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                while buf.len() < end + 4 + len {
                    let n = reader.read(&mut block).await.expect("reply body");
                    assert!(n > 0, "connection closed inside the reply body");
                    buf.extend_from_slice(&block[..n]);
                }
                let body = serde_json::from_slice(&buf[end + 4..end + 4 + len])
                    .unwrap_or_else(|_| serde_json::json!({"raw": String::from_utf8_lossy(&buf[end + 4..])}));
                return RawReply { status: status.expect("a status line"), headers, body };
            }
            let n = reader.read(&mut block).await.expect("reply");
            assert!(n > 0, "connection closed before a reply: {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&block[..n]);
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), reading).await.expect("a reply within 30 s")
}
