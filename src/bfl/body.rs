//! Translation of an `ImageJob` into the JSON body of BFL's endpoint for its model. Reference
//! images are streamed into the body as base64 produced on the fly, so neither an upload nor its
//! base64 form is ever held whole in memory.

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use serde_json::{Map, Value, json};

use crate::catalog::Upsampling;
use crate::job::{ImageJob, OutputSize};
use crate::upload::{CheckedImage, Reference};

/// BFL's name for reference number `i` (0-based): `input_image`, `input_image_2`, …
fn reference_field(i: usize) -> String {
    if i == 0 { "input_image".to_owned() } else { format!("input_image_{}", i + 1) }
}

/// The submit body: only what the client chose or the model needs; BFL's defaults stay BFL's.
/// Image references are left out (see `SubmitBody`); URL references are included.
fn job_body(job: &ImageJob) -> Map<String, Value> {
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
    for (i, reference) in job.references.iter().enumerate() {
        if let Reference::Url(url) = reference {
            body.insert(reference_field(i), json!(url));
        }
    }
    body
}

/// A submit body that can be sent any number of times (retries), streaming image references.
#[derive(Clone)]
pub struct SubmitBody {
    /// The JSON object without its closing brace.
    head: Bytes,
    images: Vec<(String, CheckedImage)>,
}

impl SubmitBody {
    pub fn new(job: &ImageJob) -> SubmitBody {
        let mut head = Value::Object(job_body(job)).to_string();
        head.pop(); // the closing `}`, written after the images
        let images = job
            .references
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match r {
                Reference::Image(image) => Some((reference_field(i), image.clone())),
                Reference::Url(_) => None,
            })
            .collect();
        SubmitBody { head: Bytes::from(head), images }
    }

    /// The same body asking BFL to call `url` with `secret` when the task ends. The secret goes
    /// only into the body sent to BFL (never logged).
    pub fn with_webhook(mut self, url: &str, secret: &str) -> SubmitBody {
        let mut head = String::from_utf8_lossy(&self.head).into_owned();
        head.push_str(&format!(",\"webhook_url\":{},\"webhook_secret\":{}", json!(url), json!(secret)));
        self.head = Bytes::from(head);
        self
    }

    /// Exact byte length of the body.
    pub fn content_length(&self) -> u64 {
        let images: u64 = self
            .images
            .iter()
            .map(|(name, image)| separator(name).len() as u64 + image.base64_len() + 1)
            .sum();
        self.head.len() as u64 + images + 1
    }

    /// A fresh body for one attempt.
    pub fn to_reqwest(&self) -> reqwest::Body {
        if self.images.is_empty() {
            let mut whole = Vec::with_capacity(self.head.len() + 1);
            whole.extend_from_slice(&self.head);
            whole.push(b'}');
            return reqwest::Body::from(whole);
        }
        let head = stream::once(futures_util::future::ready(Ok::<Bytes, std::io::Error>(self.head.clone())));
        let images = stream::iter(self.images.clone()).flat_map(|(name, image)| {
            let open = stream::once(futures_util::future::ready(Ok(Bytes::from(separator(&name)))));
            let close = stream::once(futures_util::future::ready(Ok(Bytes::from_static(b"\""))));
            open.chain(image.base64_stream()).chain(close)
        });
        let tail = stream::once(futures_util::future::ready(Ok(Bytes::from_static(b"}"))));
        reqwest::Body::wrap_stream(head.chain(images).chain(tail))
    }
}

/// `,"input_image_2":"` — what precedes an image's base64 (the head always has `prompt`, so a
/// comma is always right).
fn separator(name: &str) -> String {
    format!(",\"{name}\":\"")
}
