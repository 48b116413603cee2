//! Per-endpoint request validation following BFL's published schemas: field errors come back as
//! FastAPI's list-form 422, the aspect-ratio range check as its plain-string form. Unknown fields
//! are ignored, as FastAPI does.

use serde_json::{Map, Value, json};

use super::fields::{FieldError, Fields, Range};
use super::images::{self, MAX_PIXELS, SizeInputs};
use super::inputs;
use super::models::{Format, Model, PromptRule, Sizing, Upsampling};

/// A submit body that passed every rule of its endpoint.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Job {
    /// The prompt as sent ("" where the schema lets it be absent or null).
    pub prompt: String,
    pub seed: Option<i64>,
    pub size: (u32, u32),
    pub format: Format,
    /// Whether BFL would rewrite the prompt before generating.
    pub upsample: bool,
    /// One entry per `input_image*` field present, in index order.
    pub input_dims: Vec<Option<(u32, u32)>>,
}

/// The two shapes of FastAPI's 422 `detail`.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Rejection {
    List(Vec<FieldError>),
    Plain(String),
}

impl Rejection {
    pub(super) fn detail(&self) -> Value {
        match self {
            Rejection::List(items) => Value::Array(items.iter().map(FieldError::to_json).collect()),
            Rejection::Plain(s) => json!(s),
        }
    }
}

pub(super) const ASPECT_RANGE: &str = "Aspect ratio must be between 21:9 and 9:21";

/// Name of the n-th reference image field (1-based), as BFL spells it.
fn image_field(n: usize) -> String {
    if n == 1 { "input_image".to_owned() } else { format!("input_image_{n}") }
}

pub(super) fn validate(model: &Model, body: &Map<String, Value>) -> Result<Job, Rejection> {
    let mut f = Fields::new(body);
    if model.prompt == PromptRule::Required && !body.contains_key("prompt") {
        f.missing("prompt");
    }
    let prompt = f.string("prompt", model.prompt == PromptRule::Nullable).unwrap_or("");
    let images: Vec<(String, &str)> = (1..=model.refs)
        .filter_map(|n| {
            let name = image_field(n);
            f.string(&name, true).filter(|s| !s.is_empty()).map(|s| (name, s))
        })
        .collect();
    let seed = f.int("seed", true, Range::default());
    let (width, height) = match model.sizing {
        Sizing::Flux2 => (flux2_side(&mut f, "width"), flux2_side(&mut f, "height")),
        Sizing::Legacy => {
            let r = Range { min: Some(256), max: Some(1440), multiple_of: Some(32) };
            (f.int("width", false, r), f.int("height", false, r))
        }
        Sizing::Kontext | Sizing::Ultra => (None, None),
    };
    let aspect = match model.sizing {
        Sizing::Kontext => f.string("aspect_ratio", true),
        Sizing::Ultra => f.string("aspect_ratio", false),
        Sizing::Flux2 | Sizing::Legacy => None,
    };
    let upsample = match model.upsampling {
        Upsampling::DisablePup => !f.boolean("disable_pup", true).unwrap_or(false),
        Upsampling::Flag { default, nullable } => f.boolean("prompt_upsampling", nullable).unwrap_or(default),
        Upsampling::Never => false,
    };
    if let Some((lo, hi)) = model.steps {
        f.int("steps", true, Range::between(lo, hi));
    }
    if let Some((lo, hi)) = model.guidance {
        f.number("guidance", true, Range::between(lo, hi));
    }
    if model.ultra_knobs {
        f.boolean("raw", false);
        f.number("image_prompt_strength", false, Range::between(0.0, 1.0));
    }
    if model.image_prompt {
        f.string("image_prompt", true);
    }
    f.int("safety_tolerance", false, Range::between(0, model.safety_max));
    let format = f.choice("output_format", true, &["jpeg", "png", "webp"]);
    f.string("webhook_url", true);
    f.string("webhook_secret", true);
    if !f.errors.is_empty() {
        return Err(Rejection::List(f.errors));
    }

    // Checks BFL makes once the body has the right shape.
    let mut errors = Vec::new();
    let mut input_dims = Vec::with_capacity(images.len());
    for (name, s) in &images {
        match inputs::dims(s) {
            Ok(d) => input_dims.push(d),
            Err(e) => {
                let shown: String = s.chars().take(64).collect();
                errors.push(FieldError::body(name, "value_error", e.to_string(), json!(shown)));
            }
        }
    }
    let aspect = match aspect {
        Some(a) => match parse_ratio(a) {
            Some(r) if ratio_in_range(r) => Some(r),
            Some(_) => return Err(Rejection::Plain(ASPECT_RANGE.to_owned())),
            None => {
                let msg = "Value error, aspect_ratio must look like '16:9'";
                errors.push(FieldError::body("aspect_ratio", "value_error", msg, json!(a)));
                None
            }
        },
        None => None,
    };
    if !errors.is_empty() {
        return Err(Rejection::List(errors));
    }
    let side = |x: Option<i64>| x.map(|v| u32::try_from(v).unwrap_or(u32::MAX));
    let sizes = SizeInputs {
        width: side(width),
        height: side(height),
        aspect,
        first_input: input_dims.first().copied().flatten(),
    };
    let size = images::output_size(model.sizing, sizes);
    if model.sizing == Sizing::Flux2 && u64::from(size.0) * u64::from(size.1) > MAX_PIXELS {
        let msg = format!("Value error, width * height must be at most {MAX_PIXELS} pixels (4 MP)");
        let input = json!({ "width": size.0, "height": size.1 });
        let err = FieldError { loc: vec![json!("body")], kind: "value_error", msg, input };
        return Err(Rejection::List(vec![err]));
    }
    Ok(Job {
        prompt: prompt.to_owned(),
        seed,
        size,
        format: format.and_then(Format::parse).unwrap_or(model.default_format),
        upsample,
        input_dims,
    })
}

/// FLUX.2 `width`/`height`: nullable, 0 means "choose for me", else ≥ 64 and a multiple of 16.
fn flux2_side(f: &mut Fields, name: &str) -> Option<i64> {
    let n = f.int(name, true, Range::default()).filter(|&n| n != 0)?;
    let rule = if n < 64 {
        Some(("greater_than_equal", "Input should be greater than or equal to 64".to_owned()))
    } else if n % 16 != 0 {
        Some(("multiple_of", "Input should be a multiple of 16".to_owned()))
    } else {
        None
    };
    match rule {
        Some((kind, msg)) => {
            f.errors.push(FieldError::body(name, kind, msg, json!(n)));
            None
        }
        None => Some(n),
    }
}

/// `"W:H"` with positive integer sides.
fn parse_ratio(s: &str) -> Option<(u32, u32)> {
    let (w, h) = s.trim().split_once(':')?;
    let (w, h) = (w.trim().parse::<u32>().ok()?, h.trim().parse::<u32>().ok()?);
    (w > 0 && h > 0).then_some((w, h))
}

fn ratio_in_range((w, h): (u32, u32)) -> bool {
    let (w, h) = (u64::from(w), u64::from(h));
    w * 9 <= h * 21 && w * 21 >= h * 9
}

#[cfg(test)]
#[path = "schema_tests.rs"]
mod tests;
