//! `ImageJob`: a request that has passed every rule of PRODUCT.md section 2 and is ready to send.
//! Handlers and the dispatcher only ever see this type.

mod prompt;
mod size;

pub use prompt::MAX_TOKENS as MAX_PROMPT_TOKENS;
pub use prompt::Prompt;
pub use size::{OutputSize, SizeRules};

use crate::catalog::{Catalog, Model, Upsampling};
use crate::error::ApiError;
use crate::openai::Fields;
use crate::upload::{RefRule, Reference};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Jpeg,
    Png,
    Webp,
}

impl OutputFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "jpeg",
            OutputFormat::Png => "png",
            OutputFormat::Webp => "webp",
        }
    }
}

/// Request rules set by configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobRules {
    /// Most images one request may ask for with `n` (`jobs.max_n`).
    pub max_n: u32,
    /// What a request that names no `response_format` gets (`delivery.default_response_format`).
    pub default_response_format: ResponseFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFormat {
    Url,
    B64Json,
}

#[derive(Debug, Clone)]
pub struct ImageJob {
    pub model: Model,
    pub prompt: Prompt,
    pub size: OutputSize,
    pub seed: Option<i64>,
    pub steps: Option<u32>,
    pub guidance: Option<f64>,
    pub raw: Option<bool>,
    /// The client's wish; how (and whether) it is sent depends on the model's `Upsampling`.
    pub prompt_upsampling: Option<bool>,
    /// Already clamped to the model's upstream maximum.
    pub safety_tolerance: u8,
    pub output_format: OutputFormat,
    pub response_format: ResponseFormat,
    /// Reference images of an edit, in upload order (`input_image`, `input_image_2`, …).
    pub references: Vec<Reference>,
    /// Images asked for; `fan_out` makes one job of each.
    pub n: u32,
    /// The reply is an event stream (`stream: true`).
    pub stream: bool,
}

/// Most `partial_images` OpenAI accepts; BFL sends no previews, so none are ever sent.
const MAX_PARTIAL_IMAGES: i64 = 3;

/// `safety_tolerance` of a request that names none.
pub const DEFAULT_SAFETY: i64 = 2;

impl ImageJob {
    /// Checks every rule that applies to `fields`. The model comes first, so that an unknown model
    /// is a 404 whatever else is wrong.
    pub async fn parse(
        fields: &Fields,
        catalog: &Catalog,
        default_model: &str,
        limits: JobRules,
    ) -> Result<ImageJob, ApiError> {
        let model_id = fields.string("model")?.map(str::trim).unwrap_or(default_model);
        let model =
            catalog.get(model_id).ok_or_else(|| ApiError::ModelNotFound(model_id.to_owned()))?.clone();
        let prompt = Prompt::parse(fields.string("prompt")?).await?;

        let n = match fields.integer("n")? {
            None => 1,
            Some(n) if n < 1 => return Err(ApiError::invalid("n", "`n` must be at least 1")),
            Some(n) if n > i64::from(limits.max_n) => {
                return Err(ApiError::invalid(
                    "n",
                    format!("`n` may be at most {} (each image is its own FLUX job)", limits.max_n),
                ));
            }
            // Within 1..=max_n, which fits.
            Some(n) => u32::try_from(n).unwrap_or(1),
        };
        let stream = fields.boolean("stream")?.unwrap_or(false);
        if let Some(partial) = fields.integer("partial_images")?
            && !(0..=MAX_PARTIAL_IMAGES).contains(&partial)
        {
            return Err(ApiError::invalid(
                "partial_images",
                format!("`partial_images` must be between 0 and {MAX_PARTIAL_IMAGES}"),
            ));
        }
        if fields.string("background")?.map(str::trim) == Some("transparent") {
            return Err(ApiError::invalid("background", "FLUX cannot render transparent backgrounds"));
        }
        let response_format = match fields.string("response_format")?.map(str::trim) {
            None => limits.default_response_format,
            Some("url") => ResponseFormat::Url,
            Some("b64_json") => ResponseFormat::B64Json,
            Some(other) => {
                return Err(ApiError::invalid(
                    "response_format",
                    format!("`response_format` must be \"url\" or \"b64_json\", got \"{other}\""),
                ));
            }
        };
        let output_format =
            match fields.string("output_format")?.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
                None | Some("jpeg") | Some("jpg") => OutputFormat::Jpeg,
                Some("png") => OutputFormat::Png,
                Some("webp") => OutputFormat::Webp,
                Some(other) => {
                    return Err(ApiError::invalid(
                        "output_format",
                        format!("`output_format` must be jpeg, png or webp, got \"{other}\""),
                    ));
                }
            };
        let safety = fields.integer("safety_tolerance")?.unwrap_or(DEFAULT_SAFETY);
        if !(0..=6).contains(&safety) {
            return Err(ApiError::invalid("safety_tolerance", "`safety_tolerance` must be between 0 and 6"));
        }
        // 0..=6 fits in u8; models whose upstream maximum is 5 get 5 for a 6.
        let safety_tolerance = (safety as u8).min(model.safety_max);

        let steps = match (fields.integer("steps")?, model.steps) {
            (None, _) => None,
            (Some(_), None) => return Err(lacks(&model, "steps")),
            (Some(s), Some(k)) if s < i64::from(k.min) || s > i64::from(k.max) => {
                return Err(ApiError::invalid(
                    "steps",
                    format!("`steps` must be between {} and {}", k.min, k.max),
                ));
            }
            (Some(s), Some(_)) => u32::try_from(s).ok(),
        };
        let guidance = match (fields.number("guidance")?, model.guidance) {
            (None, _) => None,
            (Some(_), None) => return Err(lacks(&model, "guidance")),
            (Some(g), Some(k)) if g < k.min || g > k.max => {
                return Err(ApiError::invalid(
                    "guidance",
                    format!("`guidance` must be between {} and {}", k.min, k.max),
                ));
            }
            (Some(g), Some(_)) => Some(g),
        };
        let raw = match fields.boolean("raw")? {
            Some(_) if !model.raw => return Err(lacks(&model, "raw")),
            raw => raw,
        };
        let prompt_upsampling = match model.upsampling {
            // klein has no upsampling; the catalog says the knob is silently ignored.
            Upsampling::Ignored => None,
            Upsampling::DisablePup | Upsampling::PromptUpsampling => fields.boolean("prompt_upsampling")?,
        };
        let seed = fields.integer("seed")?;
        let size = OutputSize::parse(&model, fields)?;

        Ok(ImageJob {
            model,
            prompt,
            size,
            seed,
            steps,
            guidance,
            raw,
            prompt_upsampling,
            safety_tolerance,
            output_format,
            response_format,
            references: Vec::new(),
            n,
            stream,
        })
    }

    /// An edit: the generation rules plus the model's reference rules.
    pub async fn parse_edit(
        fields: &Fields,
        references: Vec<Reference>,
        catalog: &Catalog,
        default_model: &str,
        limits: JobRules,
    ) -> Result<ImageJob, ApiError> {
        let mut job = ImageJob::parse(fields, catalog, default_model, limits).await?;
        let model = &job.model;
        if model.max_refs == 0 {
            return Err(generation_only(model, catalog));
        }
        if references.is_empty() {
            return Err(ApiError::invalid("image", "an edit needs at least one reference image in `image`"));
        }
        check_refs(model, references.len(), catalog)?;
        job.references = references;
        Ok(job)
    }
}

/// The catalog's reference limits, applied by `upload` while the parts arrive, with the same
/// errors `parse_edit` gives once they are all in.
impl RefRule for Catalog {
    fn most(&self) -> usize {
        self.iter().map(|m| m.max_refs).max().unwrap_or(0)
    }

    fn check(&self, model: &str, count: usize) -> Result<(), ApiError> {
        match self.get(model.trim()) {
            Some(model) => check_refs(model, count, self),
            // An unknown model is `parse`'s 404 once the body is in.
            None => Ok(()),
        }
    }
}

/// `count` references are more than `model` takes.
fn check_refs(model: &Model, count: usize, catalog: &Catalog) -> Result<(), ApiError> {
    if count <= model.max_refs {
        return Ok(());
    }
    if model.max_refs == 0 {
        return Err(generation_only(model, catalog));
    }
    Err(ApiError::invalid(
        "image",
        format!(
            "{} takes at most {} reference image{}, got {count}",
            model.id,
            model.max_refs,
            if model.max_refs == 1 { "" } else { "s" },
        ),
    ))
}

fn generation_only(model: &Model, catalog: &Catalog) -> ApiError {
    let editors: Vec<&str> = catalog.iter().filter(|m| m.max_refs > 0).map(|m| m.id).collect();
    ApiError::invalid(
        "model",
        format!("{} generates only and cannot edit; edit with one of: {}", model.id, editors.join(", ")),
    )
}

impl ImageJob {
    /// One job per image asked for: the same request with `n = 1`, seeds `seed`, `seed + 1`, …
    /// when a seed was given (different images either way).
    pub fn fan_out(self) -> Vec<ImageJob> {
        let n = self.n.max(1);
        (0..n)
            .map(|i| ImageJob { seed: self.seed.map(|s| s.wrapping_add(i64::from(i))), n: 1, ..self.clone() })
            .collect()
    }
}

fn lacks(model: &Model, param: &str) -> ApiError {
    ApiError::invalid(param, format!("{} does not support `{param}`", model.id))
}
