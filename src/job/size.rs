//! Output size rules per catalog sizing: FLUX.2 and legacy width/height, or a reduced aspect ratio.

use crate::catalog::{Model, Sizing};
use crate::error::ApiError;
use crate::openai::Fields;

/// What the job asks BFL for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputSize {
    /// No size given (or `auto`): BFL's default for the model.
    Default,
    Dimensions {
        width: u32,
        height: u32,
    },
    /// A reduced ratio `w:h` between 21:9 and 9:21.
    AspectRatio {
        w: u32,
        h: u32,
    },
}

const FLUX2_MAX_PIXELS: u64 = 2048 * 2048;

impl OutputSize {
    /// Reads `size`, `width`/`height` and `aspect_ratio` and checks them against the model's row.
    pub fn parse(model: &Model, fields: &Fields) -> Result<OutputSize, ApiError> {
        let from_size = match fields.string("size")?.map(str::trim) {
            None | Some("auto") | Some("") => None,
            Some(s) => Some(parse_pair(s, 'x').ok_or_else(|| {
                ApiError::invalid("size", format!("`size` must be \"auto\" or \"WIDTHxHEIGHT\", got \"{s}\""))
            })?),
        };
        let from_fields = match (fields.integer("width")?, fields.integer("height")?) {
            (None, None) => None,
            (Some(w), Some(h)) => Some((side("width", w)?, side("height", h)?)),
            (None, Some(_)) => return Err(ApiError::invalid("width", "`height` was given without `width`")),
            (Some(_), None) => return Err(ApiError::invalid("height", "`width` was given without `height`")),
        };
        let (dims, param) = match (from_size, from_fields) {
            (Some(a), Some(b)) if a != b => {
                return Err(ApiError::invalid("size", "`size` and `width`/`height` disagree"));
            }
            (Some(d), _) => (Some(d), "size"),
            (None, Some(d)) => (Some(d), "width"),
            (None, None) => (None, "size"),
        };
        let ratio = fields.string("aspect_ratio")?;
        match model.sizing {
            Sizing::Flux2 | Sizing::Legacy => {
                if ratio.is_some() {
                    return Err(ApiError::invalid(
                        "aspect_ratio",
                        format!("{} takes `size` (or width/height), not `aspect_ratio`", model.id),
                    ));
                }
                let limits = if model.sizing == Sizing::Flux2 { &FLUX2 } else { &LEGACY };
                match dims {
                    None => Ok(OutputSize::Default),
                    Some((w, h)) => check_dimensions(model, limits, w, h, param),
                }
            }
            Sizing::AspectRatio => {
                let explicit = match ratio {
                    None => None,
                    Some(r) => {
                        let (w, h) = parse_pair(r.trim(), ':').ok_or_else(|| {
                            ApiError::invalid(
                                "aspect_ratio",
                                format!("`aspect_ratio` must look like \"16:9\", got \"{r}\""),
                            )
                        })?;
                        Some(reduce(w, h))
                    }
                };
                let implied = dims.map(|(w, h)| reduce(w, h));
                let (ratio, param) = match (explicit, implied) {
                    (Some(a), Some(b)) if a != b => {
                        return Err(ApiError::invalid("aspect_ratio", "`aspect_ratio` and `size` disagree"));
                    }
                    (Some(r), _) => (r, "aspect_ratio"),
                    (None, Some(r)) => (r, param),
                    (None, None) => return Ok(OutputSize::Default),
                };
                check_ratio(ratio, param)
            }
        }
    }
}

fn side(param: &str, v: i64) -> Result<u32, ApiError> {
    u32::try_from(v)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| ApiError::invalid(param, format!("`{param}` must be positive")))
}

fn parse_pair(s: &str, sep: char) -> Option<(u32, u32)> {
    let (a, b) = s.split_once(sep)?;
    let a: u32 = a.trim().parse().ok()?;
    let b: u32 = b.trim().parse().ok()?;
    (a > 0 && b > 0).then_some((a, b))
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn reduce(w: u32, h: u32) -> (u32, u32) {
    let g = gcd(w, h).max(1);
    (w / g, h / g)
}

/// Side limits of a width/height model.
struct Limits {
    min: u32,
    max: u32,
    multiple: u32,
    max_pixels: u64,
}

const FLUX2: Limits = Limits { min: 64, max: 2048, multiple: 16, max_pixels: FLUX2_MAX_PIXELS };
const LEGACY: Limits = Limits { min: 256, max: 1440, multiple: 32, max_pixels: u64::MAX };

fn check_dimensions(
    model: &Model,
    limits: &Limits,
    w: u32,
    h: u32,
    param: &str,
) -> Result<OutputSize, ApiError> {
    let why = if !(limits.min..=limits.max).contains(&w) || !(limits.min..=limits.max).contains(&h) {
        format!("each side must be between {} and {}", limits.min, limits.max)
    } else if !w.is_multiple_of(limits.multiple) || !h.is_multiple_of(limits.multiple) {
        format!("width and height must be multiples of {}", limits.multiple)
    } else if u64::from(w) * u64::from(h) > limits.max_pixels {
        "at most 4 megapixels (2048x2048)".to_owned()
    } else {
        return Ok(OutputSize::Dimensions { width: w, height: h });
    };
    Err(ApiError::invalid(param, format!("size {w}x{h} is not valid for {}: {why}", model.id)))
}

fn check_ratio((w, h): (u32, u32), param: &str) -> Result<OutputSize, ApiError> {
    // Between 21:9 and 9:21, compared without floating point.
    let (w64, h64) = (u64::from(w), u64::from(h));
    if w64 * 9 > h64 * 21 || h64 * 9 > w64 * 21 {
        return Err(ApiError::invalid(param, format!("aspect ratio {w}:{h} must lie between 21:9 and 9:21")));
    }
    Ok(OutputSize::AspectRatio { w, h })
}
