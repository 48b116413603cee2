//! Structural completeness of a reference, checked as its bytes stream past: the magic bytes
//! that name the format, PNG chunks walked from IHDR to IEND (lengths only, no CRCs), a JPEG's
//! final EOI marker, a WebP's RIFF size against the file length.

use super::ImageKind;
use super::check::Problem;

/// `None`: too few bytes to tell; `Some(None)`: none of ours.
pub(super) fn detect(bytes: &[u8]) -> Option<Option<ImageKind>> {
    // `?` stands for any byte (the RIFF size).
    const SIGNATURES: [(&[u8], ImageKind); 3] = [
        (b"\x89PNG\r\n\x1a\n", ImageKind::Png),
        (b"\xFF\xD8\xFF", ImageKind::Jpeg),
        (b"RIFF????WEBP", ImageKind::Webp),
    ];
    let mut undecided = false;
    for (signature, kind) in SIGNATURES {
        let agrees = signature.iter().zip(bytes).all(|(&want, &got)| want == b'?' || want == got);
        if agrees && bytes.len() >= signature.len() {
            return Some(Some(kind));
        }
        undecided |= agrees;
    }
    if undecided { None } else { Some(None) }
}

#[derive(Debug)]
pub(super) enum Walk {
    Png(PngWalk),
    /// The last two bytes before any trailing zero padding, and the very last byte seen.
    Jpeg {
        end: Option<[u8; 2]>,
        last: Option<u8>,
    },
    /// The first 8 bytes ("RIFF" + size) and how many of them have arrived.
    Webp {
        start: [u8; 8],
        have: usize,
    },
}

#[derive(Debug)]
enum PngStage {
    Signature(usize),
    ChunkHeader { buf: [u8; 8], have: usize },
    Skip { left: u64, last: bool },
    AfterEnd,
}

#[derive(Debug)]
pub(super) struct PngWalk {
    stage: PngStage,
    first: bool,
}

impl Walk {
    pub(super) fn new(kind: ImageKind) -> Walk {
        match kind {
            ImageKind::Png => Walk::Png(PngWalk { stage: PngStage::Signature(8), first: true }),
            ImageKind::Jpeg => Walk::Jpeg { end: None, last: None },
            ImageKind::Webp => Walk::Webp { start: [0; 8], have: 0 },
        }
    }

    pub(super) fn kind(&self) -> ImageKind {
        match self {
            Walk::Png(_) => ImageKind::Png,
            Walk::Jpeg { .. } => ImageKind::Jpeg,
            Walk::Webp { .. } => ImageKind::Webp,
        }
    }

    pub(super) fn feed(&mut self, data: &[u8]) -> Result<(), Problem> {
        match self {
            Walk::Png(png) => png.feed(data),
            Walk::Jpeg { end, last } => {
                if let Some(k) = data.iter().rposition(|&b| b != 0) {
                    let before = if k > 0 { Some(data[k - 1]) } else { *last };
                    *end = before.map(|b| [b, data[k]]);
                }
                if let Some(&b) = data.last() {
                    *last = Some(b);
                }
                Ok(())
            }
            Walk::Webp { start, have } => {
                let take = data.len().min(8 - *have);
                start[*have..*have + take].copy_from_slice(&data[..take]);
                *have += take;
                Ok(())
            }
        }
    }

    pub(super) fn finish(self, len: u64) -> Result<(), Problem> {
        match self {
            Walk::Png(PngWalk { stage: PngStage::AfterEnd, .. }) => Ok(()),
            Walk::Png(_) => Err(Problem::Incomplete("the PNG chunks stop before IEND")),
            Walk::Jpeg { end: Some([0xFF, 0xD9]), .. } => Ok(()),
            Walk::Jpeg { .. } => Err(Problem::Incomplete("the JPEG does not end with the EOI marker")),
            Walk::Webp { start, have: 8 }
                if u64::from(u32::from_le_bytes([start[4], start[5], start[6], start[7]])) + 8 == len =>
            {
                Ok(())
            }
            Walk::Webp { .. } => {
                Err(Problem::Incomplete("the WebP RIFF size does not match the file length"))
            }
        }
    }
}

impl PngWalk {
    fn feed(&mut self, mut data: &[u8]) -> Result<(), Problem> {
        while !data.is_empty() {
            match &mut self.stage {
                PngStage::Signature(left) => {
                    let take = data.len().min(*left);
                    data = &data[take..];
                    *left -= take;
                    if *left == 0 {
                        self.stage = PngStage::ChunkHeader { buf: [0; 8], have: 0 };
                    }
                }
                PngStage::ChunkHeader { buf, have } => {
                    let take = data.len().min(8 - *have);
                    buf[*have..*have + take].copy_from_slice(&data[..take]);
                    *have += take;
                    data = &data[take..];
                    if *have == 8 {
                        let header = *buf;
                        self.stage = self.chunk(header)?;
                    }
                }
                PngStage::Skip { left, last } => {
                    let take = (data.len() as u64).min(*left);
                    data = &data[take as usize..];
                    *left -= take;
                    if *left == 0 {
                        self.stage = if *last {
                            PngStage::AfterEnd
                        } else {
                            PngStage::ChunkHeader { buf: [0; 8], have: 0 }
                        };
                    }
                }
                PngStage::AfterEnd => {
                    if data.iter().any(|&b| b != 0) {
                        return Err(Problem::Incomplete("there are bytes after the PNG's IEND chunk"));
                    }
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The stage after a chunk's length and type: skip its data and CRC.
    fn chunk(&mut self, header: [u8; 8]) -> Result<PngStage, Problem> {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let kind = &header[4..8];
        if len > 0x7FFF_FFFF || !kind.iter().all(u8::is_ascii_alphabetic) {
            return Err(Problem::Incomplete("a PNG chunk header is invalid"));
        }
        if std::mem::take(&mut self.first) && (kind != b"IHDR" || len != 13) {
            return Err(Problem::Incomplete("the PNG does not start with an IHDR chunk"));
        }
        let last = kind == b"IEND";
        Ok(PngStage::Skip { left: u64::from(len) + 4, last })
    }
}
