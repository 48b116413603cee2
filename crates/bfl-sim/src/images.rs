//! Output sizes the way each BFL endpoint picks them, and the cheap but real images served at
//! result URLs (colour bands derived from the seed, encoded as JPEG, PNG or WebP).

use std::io::Cursor;

use image::{ImageFormat, RgbImage};

use super::models::{Format, Sizing};

/// FLUX.2's pixel budget: 4 MP.
pub(super) const MAX_PIXELS: u64 = 4_194_304;
const ONE_MP: f64 = 1_048_576.0;

/// What the size depends on, already validated.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct SizeInputs {
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Reduced `W:H` from `aspect_ratio`.
    pub aspect: Option<(u32, u32)>,
    /// Dimensions of the first input image, when it was sent as base64.
    pub first_input: Option<(u32, u32)>,
}

/// The output size in pixels for an endpoint of this kind.
pub(super) fn output_size(sizing: Sizing, s: SizeInputs) -> (u32, u32) {
    match sizing {
        Sizing::Flux2 => {
            let (bw, bh) = s.first_input.map_or((1024, 1024), fit_flux2);
            (s.width.unwrap_or(bw), s.height.unwrap_or(bh))
        }
        Sizing::Legacy => (s.width.unwrap_or(1024), s.height.unwrap_or(768)),
        Sizing::Kontext => {
            let ratio = s.aspect.or(s.first_input).unwrap_or((1, 1));
            by_area(ratio, ONE_MP)
        }
        Sizing::Ultra => by_area(s.aspect.unwrap_or((16, 9)), MAX_PIXELS as f64),
    }
}

/// An input image's size rounded down to multiples of 16 and shrunk to at most 4 MP.
fn fit_flux2((w, h): (u32, u32)) -> (u32, u32) {
    let (w, h) = (f64::from(w.max(1)), f64::from(h.max(1)));
    let scale = (MAX_PIXELS as f64 / (w * h)).sqrt().min(1.0);
    let down16 = |x: f64| ((x / 16.0).floor() as u64 * 16).max(64);
    let (mut w, mut h) = (down16(w * scale), down16(h * scale));
    // Raising a tiny side to 64 can push extreme aspect ratios back over budget.
    if w * h > MAX_PIXELS {
        if w >= h {
            w = (MAX_PIXELS / h) / 16 * 16;
        } else {
            h = (MAX_PIXELS / w) / 16 * 16;
        }
    }
    (clamp_u32(w), clamp_u32(h))
}

/// Sides with this ratio covering about `area` pixels, both multiples of 32.
fn by_area((rw, rh): (u32, u32), area: f64) -> (u32, u32) {
    // Input images may have any shape; BFL only produces 21:9 … 9:21.
    let ratio = (f64::from(rw.max(1)) / f64::from(rh.max(1))).clamp(9.0 / 21.0, 21.0 / 9.0);
    let h = (area / ratio).sqrt();
    let round32 = |x: f64| (((x / 32.0).round() as u64) * 32).max(32);
    (clamp_u32(round32(h * ratio)), clamp_u32(round32(h)))
}

fn clamp_u32(x: u64) -> u32 {
    u32::try_from(x).unwrap_or(u32::MAX)
}

/// Encodes a banded gradient of this size; every seed gets its own palette.
pub(super) fn render(
    width: u32,
    height: u32,
    seed: i64,
    format: Format,
) -> Result<Vec<u8>, image::ImageError> {
    let mut rng = fastrand::Rng::with_seed(seed as u64);
    let palette: Vec<[f32; 3]> =
        (0..4).map(|_| [rng.f32() * 255.0, rng.f32() * 255.0, rng.f32() * 255.0]).collect();
    let (w, h) = (width.max(1), height.max(1));
    // One shaded row per band, copied down the image: cheap even in unoptimised test builds.
    let rows: Vec<Vec<u8>> = palette
        .iter()
        .map(|band| {
            (0..w)
                .flat_map(|x| {
                    let shade = 0.55 + 0.45 * (x as f32 / w as f32);
                    band.map(|c| (c * shade) as u8)
                })
                .collect()
        })
        .collect();
    let mut pixels = Vec::with_capacity(w as usize * h as usize * 3);
    for y in 0..h as usize {
        pixels.extend_from_slice(&rows[(y * rows.len() / h as usize).min(rows.len() - 1)]);
    }
    let Some(img) = RgbImage::from_raw(w, h, pixels) else {
        let kind = image::error::ParameterErrorKind::DimensionMismatch;
        return Err(image::ImageError::Parameter(image::error::ParameterError::from_kind(kind)));
    };
    let mut out = Cursor::new(Vec::new());
    let fmt = match format {
        Format::Jpeg => ImageFormat::Jpeg,
        Format::Png => ImageFormat::Png,
        Format::Webp => ImageFormat::WebP,
    };
    img.write_to(&mut out, fmt)?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flux2_defaults_to_square_or_follows_the_first_input() {
        assert_eq!(output_size(Sizing::Flux2, SizeInputs::default()), (1024, 1024));
        let s = SizeInputs { first_input: Some((1000, 700)), ..Default::default() };
        assert_eq!(output_size(Sizing::Flux2, s), (992, 688));
        let big = SizeInputs { first_input: Some((4000, 3000)), ..Default::default() };
        let (w, h) = output_size(Sizing::Flux2, big);
        assert!(u64::from(w) * u64::from(h) <= MAX_PIXELS && w % 16 == 0 && h % 16 == 0);
        assert!(w > 2300 && h > 1700, "{w}x{h}");
        let odd = SizeInputs { first_input: Some((5, 900_000)), width: Some(512), ..Default::default() };
        let (w, h) = output_size(Sizing::Flux2, odd);
        assert_eq!(w, 512);
        assert!(h % 16 == 0 && 64 * u64::from(h) <= MAX_PIXELS);
    }

    #[test]
    fn aspect_ratio_models_size_by_area() {
        assert_eq!(output_size(Sizing::Kontext, SizeInputs::default()), (1024, 1024));
        let (w, h) = output_size(Sizing::Ultra, SizeInputs::default());
        assert_eq!(h, 1536);
        assert!((2720..=2752).contains(&w));
        let tall = SizeInputs { aspect: Some((9, 21)), ..Default::default() };
        let (w, h) = output_size(Sizing::Kontext, tall);
        assert!(h > w && w % 32 == 0 && h % 32 == 0);
        assert_eq!(output_size(Sizing::Legacy, SizeInputs::default()), (1024, 768));
    }

    #[test]
    fn rendered_images_have_the_requested_size_in_every_format() {
        for f in [Format::Jpeg, Format::Png, Format::Webp] {
            let bytes = render(96, 64, 7, f).expect("encodes");
            let size = imagesize::blob_size(&bytes).expect("readable header");
            assert_eq!((size.width, size.height), (96, 64), "{f:?}");
        }
    }
}
