//! `ImageName`: where a re-hosted image lives in the gateway's store, named by its content
//! (`<sha256 hex>.<jpeg|png|webp>`). The type cannot hold another shape, so a name taken from a
//! URL path can never reach the store as `../` or an absolute path.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// The three formats BFL produces, told from the bytes themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoredFormat {
    Jpeg,
    Png,
    Webp,
}

impl StoredFormat {
    /// The format of `bytes` from its magic numbers, if it is one of ours.
    pub fn sniff(bytes: &[u8]) -> Option<StoredFormat> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(StoredFormat::Png)
        } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
            Some(StoredFormat::Jpeg)
        } else if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
            Some(StoredFormat::Webp)
        } else {
            None
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            StoredFormat::Jpeg => "jpeg",
            StoredFormat::Png => "png",
            StoredFormat::Webp => "webp",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            StoredFormat::Jpeg => "image/jpeg",
            StoredFormat::Png => "image/png",
            StoredFormat::Webp => "image/webp",
        }
    }

    fn from_extension(ext: &str) -> Option<StoredFormat> {
        [StoredFormat::Jpeg, StoredFormat::Png, StoredFormat::Webp].into_iter().find(|f| f.extension() == ext)
    }
}

/// A content-addressed image name: 64 lowercase hex digits, a dot, a known extension.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageName {
    name: Arc<str>,
    format: StoredFormat,
}

const HASH_HEX: usize = 64;

impl ImageName {
    /// The name of `bytes` in `format` (hashing tens of megabytes takes a while: call it off
    /// the async workers for large images).
    pub fn of(bytes: &[u8], format: StoredFormat) -> ImageName {
        let hash = hex::encode(Sha256::digest(bytes));
        ImageName { name: Arc::from(format!("{hash}.{}", format.extension())), format }
    }

    /// A name as it appears in a URL or a directory listing; `None` for anything else.
    pub fn parse(text: &str) -> Option<ImageName> {
        let (hash, ext) = text.split_once('.')?;
        let hex_ok = hash.len() == HASH_HEX && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let format = StoredFormat::from_extension(ext)?;
        hex_ok.then(|| ImageName { name: Arc::from(text), format })
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    pub fn format(&self) -> StoredFormat {
        self.format
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_the_sha256_of_the_bytes_with_the_formats_extension() {
        let name = ImageName::of(b"abc", StoredFormat::Png);
        assert_eq!(name.as_str(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad.png");
        assert_eq!(ImageName::parse(name.as_str()), Some(name));
    }

    #[test]
    fn only_hex_names_with_a_known_extension_parse() {
        let hash = "a".repeat(64);
        for good in ["jpeg", "png", "webp"] {
            assert!(ImageName::parse(&format!("{hash}.{good}")).is_some(), "{good}");
        }
        for bad in [
            format!("{hash}.gif"),
            format!("{hash}.png.png"),
            format!("{}.png", "A".repeat(64)),
            format!("{}.png", "a".repeat(63)),
            format!("{}.png", "a".repeat(65)),
            format!("../{}.png", "a".repeat(61)),
            format!("{}/a.png", "a".repeat(62)),
            "..".to_owned(),
            String::new(),
            format!("{hash}."),
            hash.clone(),
            format!("{hash}.PNG"),
        ] {
            assert!(ImageName::parse(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn formats_are_told_from_their_magic_bytes() {
        assert_eq!(StoredFormat::sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), Some(StoredFormat::Png));
        assert_eq!(StoredFormat::sniff(b"\xff\xd8\xff\xe0\0\x10JFIF"), Some(StoredFormat::Jpeg));
        assert_eq!(StoredFormat::sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(StoredFormat::Webp));
        assert_eq!(StoredFormat::sniff(b"GIF89a"), None);
        assert_eq!(StoredFormat::sniff(b"<html>"), None);
    }
}
