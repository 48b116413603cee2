//! The checker on its own: formats, header dimensions, structure, fed in arbitrary pieces.

use super::super::ImageKind;
use super::super::check::{Checker, Problem, Verdict, judge};
use super::{jpeg, jpeg_with_far_sof, png, png_header, webp};

fn check_in_pieces(bytes: &[u8], piece: usize) -> Result<Verdict, Problem> {
    let mut checker = Checker::default();
    for chunk in bytes.chunks(piece) {
        checker.feed(chunk)?;
    }
    checker.finish()
}

#[test]
fn real_images_pass_whatever_the_piece_size() {
    for (bytes, kind) in
        [(png(100, 80), ImageKind::Png), (jpeg(100, 80), ImageKind::Jpeg), (webp(100, 80), ImageKind::Webp)]
    {
        for piece in [1, 3, 7, 4096, usize::MAX] {
            let verdict = check_in_pieces(&bytes, piece);
            assert_eq!(verdict, Ok(Verdict { kind, dims: Some((100, 80)) }), "{kind:?} in pieces of {piece}");
        }
    }
}

#[test]
fn the_limits_are_64_pixels_a_side_and_4_megapixels() {
    assert_eq!(judge(64, 64), Ok((64, 64)));
    assert_eq!(judge(2048, 2048), Ok((2048, 2048)));
    assert!(matches!(judge(63, 64), Err(Problem::TooSmall { .. })));
    assert!(matches!(judge(0, 0), Err(Problem::TooSmall { .. })));
    assert!(matches!(judge(2049, 2048), Err(Problem::TooManyPixels { .. })));
    assert!(matches!(judge(u64::from(u32::MAX), u64::from(u32::MAX)), Err(Problem::TooManyPixels { .. })));
}

#[test]
fn a_huge_header_is_refused_as_soon_as_it_is_in() {
    let mut checker = Checker::default();
    let header = png_header(100_000, 100_000);
    assert_eq!(checker.feed(&header[..20]), Ok(()));
    assert!(matches!(
        checker.feed(&header[20..]),
        Err(Problem::TooManyPixels { width: 100_000, height: 100_000 })
    ));
}

#[test]
fn short_or_foreign_bytes_are_not_images() {
    assert_eq!(check_in_pieces(b"", 1), Err(Problem::Empty));
    assert_eq!(check_in_pieces(b"\x89PN", 1), Err(Problem::NotImage));
    assert_eq!(check_in_pieces(b"GIF89a\x01\x00\x01\x00\x00\x00\x00", 1), Err(Problem::NotImage));
    assert_eq!(check_in_pieces(b"RIFF\x10\x00\x00\x00WAVEfmt ", 5), Err(Problem::NotImage));
}

#[test]
fn a_png_must_walk_from_ihdr_to_iend() {
    let good = png(64, 64);
    let truncated = &good[..good.len() - 20];
    assert!(matches!(check_in_pieces(truncated, 1000), Err(Problem::Incomplete(_))));
    let without_iend = &good[..good.len() - 12];
    assert!(matches!(check_in_pieces(without_iend, 1000), Err(Problem::Incomplete(_))));

    let mut padded = good.clone();
    padded.extend_from_slice(&[0; 32]);
    assert!(check_in_pieces(&padded, 1000).is_ok(), "zero padding after IEND is harmless");
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"junk");
    assert!(matches!(check_in_pieces(&trailing, 1000), Err(Problem::Incomplete(_))));

    let mut no_ihdr = good.clone();
    no_ihdr[12..16].copy_from_slice(b"IDAT");
    assert!(matches!(check_in_pieces(&no_ihdr, 1000), Err(Problem::Incomplete(_))));
}

#[test]
fn a_jpeg_must_end_with_eoi_before_any_zero_padding() {
    let good = jpeg(64, 64);
    assert!(matches!(check_in_pieces(&good[..good.len() - 2], 100), Err(Problem::Incomplete(_))));
    let mut padded = good.clone();
    padded.extend_from_slice(&[0; 300]);
    // Pieces of 1 put FF and D9 in different chunks, and padding in chunks of their own.
    for piece in [1, 2, 100] {
        assert!(check_in_pieces(&padded, piece).is_ok(), "pieces of {piece}");
    }
    let mut zeros_inside = good[..good.len() - 2].to_vec();
    zeros_inside.extend_from_slice(&[0, 0, 0xFF, 0xD9, 0x00, 0x17]);
    assert!(matches!(check_in_pieces(&zeros_inside, 1), Err(Problem::Incomplete(_))));
}

#[test]
fn a_webp_riff_size_must_match_the_file_length() {
    let good = webp(64, 64);
    assert!(matches!(check_in_pieces(&good[..good.len() - 1], 64), Err(Problem::Incomplete(_))));
    let mut longer = good.clone();
    longer.push(0);
    assert!(matches!(check_in_pieces(&longer, 64), Err(Problem::Incomplete(_))));
}

#[test]
fn a_far_sof_leaves_the_dimensions_to_the_whole_file() {
    let far = jpeg_with_far_sof(100, 80, 3);
    let verdict = check_in_pieces(&far, 8192).expect("structurally fine");
    assert_eq!(verdict, Verdict { kind: ImageKind::Jpeg, dims: None });
    let near = jpeg_with_far_sof(100, 80, 1);
    assert_eq!(check_in_pieces(&near, 8192).map(|v| v.dims), Ok(Some((100, 80))));
}

#[test]
fn a_few_bytes_are_enough_to_refuse_a_foreign_format() {
    let mut checker = Checker::default();
    assert_eq!(checker.feed(b"GI"), Err(Problem::NotImage));
    let mut checker = Checker::default();
    assert_eq!(checker.feed(b"RIF"), Ok(()), "could still be a WebP");
    assert_eq!(checker.feed(b"F\x00\x00\x00\x00WAVE"), Err(Problem::NotImage));
}
