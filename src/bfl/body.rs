//! Translation of an `ImageJob` into the JSON body of BFL's endpoint for its model.

use serde_json::{Map, Value, json};

use crate::catalog::Upsampling;
use crate::job::{ImageJob, OutputSize};

/// The submit body: only what the client chose or the model needs; BFL's defaults stay BFL's.
pub fn job_body(job: &ImageJob) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("prompt".into(), json!(job.prompt.as_str()));
    match job.size {
        OutputSize::Default => {}
        OutputSize::Dimensions { width, height } => {
            body.insert("width".into(), json!(width));
            body.insert("height".into(), json!(height));
        }
        OutputSize::AspectRatio { w, h } => {
            body.insert("aspect_ratio".into(), json!(format!("{w}:{h}")));
        }
    }
    if let Some(seed) = job.seed {
        body.insert("seed".into(), json!(seed));
    }
    if let Some(steps) = job.steps {
        body.insert("steps".into(), json!(steps));
    }
    if let Some(guidance) = job.guidance {
        body.insert("guidance".into(), json!(guidance));
    }
    if let Some(raw) = job.raw {
        body.insert("raw".into(), json!(raw));
    }
    match (job.model.upsampling, job.prompt_upsampling) {
        (Upsampling::DisablePup, Some(on)) => {
            body.insert("disable_pup".into(), json!(!on));
        }
        (Upsampling::PromptUpsampling, Some(on)) => {
            body.insert("prompt_upsampling".into(), json!(on));
        }
        (_, None) | (Upsampling::Ignored, _) => {}
    }
    body.insert("safety_tolerance".into(), json!(job.safety_tolerance));
    body.insert("output_format".into(), json!(job.output_format.as_str()));
    body
}
