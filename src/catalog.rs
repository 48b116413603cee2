//! The model table: the only place a model's facts live (PRODUCT.md section 1).

use std::collections::HashMap;
use std::time::Duration;

use crate::config::ModelOverride;

/// How a model takes its output size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sizing {
    /// FLUX.2: width/height, each 64–2048, multiples of 16, at most 4 MP.
    Flux2,
    /// FLUX.1 width/height models: 256–1440, multiples of 32.
    Legacy,
    /// Kontext and Ultra: a reduced `W:H` ratio between 21:9 and 9:21.
    AspectRatio,
}

/// How a model exposes prompt upsampling upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsampling {
    /// `disable_pup` (upsampling on by default upstream): our `prompt_upsampling=false` sends `disable_pup=true`.
    DisablePup,
    /// `prompt_upsampling` passed through as is.
    PromptUpsampling,
    /// The model has none; the client's `prompt_upsampling` is silently ignored.
    Ignored,
}

/// Which upstream concurrency budget a model draws from besides the per-key one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotClass {
    General,
    /// flux-kontext-max has its own, smaller cap.
    KontextMax,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Knob<T> {
    pub min: T,
    pub max: T,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub id: &'static str,
    /// Path on the BFL API, e.g. `/v1/flux-2-pro`.
    pub path: &'static str,
    pub sizing: Sizing,
    /// Most reference images an edit may carry; 0 means generation only.
    pub max_refs: usize,
    pub upsampling: Upsampling,
    pub steps: Option<Knob<u32>>,
    pub guidance: Option<Knob<f64>>,
    pub raw: bool,
    /// Highest `safety_tolerance` BFL accepts for this model; higher requests are clamped to it.
    pub safety_max: u8,
    /// No request for this model outlives this (504 past it).
    pub deadline: Duration,
    pub price_usd: f64,
    /// Typical time until Ready: the first poll waits this long.
    pub expected: Duration,
    pub slot_class: SlotClass,
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
const fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

const FLUX2_KNOBS: (Option<Knob<u32>>, Option<Knob<f64>>) = (None, None);

#[allow(clippy::too_many_arguments)]
const fn row(
    id: &'static str,
    path: &'static str,
    sizing: Sizing,
    max_refs: usize,
    upsampling: Upsampling,
    knobs: (Option<Knob<u32>>, Option<Knob<f64>>),
    raw: bool,
    safety_max: u8,
    deadline: Duration,
    price_usd: f64,
    expected: Duration,
) -> Model {
    Model {
        id,
        path,
        sizing,
        max_refs,
        upsampling,
        steps: knobs.0,
        guidance: knobs.1,
        raw,
        safety_max,
        deadline,
        price_usd,
        expected,
        slot_class: SlotClass::General,
    }
}

const STEPS: Knob<u32> = Knob { min: 1, max: 50 };

/// The twelve rows of PRODUCT.md section 1, before configuration overrides.
#[rustfmt::skip]
fn rows() -> Vec<Model> {
    use Sizing::*;
    use Upsampling::*;
    let flex = (Some(STEPS), Some(Knob { min: 1.5, max: 10.0 }));
    let legacy = (Some(STEPS), Some(Knob { min: 1.5, max: 5.0 }));
    let mut kontext_max = row(
        "flux-kontext-max", "/v1/flux-kontext-max", AspectRatio, 1, PromptUpsampling, FLUX2_KNOBS, false, 6, secs(120), 0.070, millis(4000),
    );
    kontext_max.slot_class = SlotClass::KontextMax;
    vec![
        row("flux-2-max", "/v1/flux-2-max", Flux2, 8, DisablePup, FLUX2_KNOBS, false, 5, secs(120), 0.070, millis(6000)),
        row("flux-2-pro", "/v1/flux-2-pro", Flux2, 8, DisablePup, FLUX2_KNOBS, false, 5, secs(120), 0.030, millis(3000)),
        row("flux-2-pro-preview", "/v1/flux-2-pro-preview", Flux2, 8, DisablePup, FLUX2_KNOBS, false, 5, secs(120), 0.030, millis(3000)),
        row("flux-2-flex", "/v1/flux-2-flex", Flux2, 8, PromptUpsampling, flex, false, 5, secs(180), 0.060, millis(9000)),
        row("flux-2-klein-9b", "/v1/flux-2-klein-9b", Flux2, 4, Ignored, FLUX2_KNOBS, false, 5, secs(60), 0.010, millis(400)),
        row("flux-2-klein-4b", "/v1/flux-2-klein-4b", Flux2, 4, Ignored, FLUX2_KNOBS, false, 5, secs(60), 0.010, millis(400)),
        kontext_max,
        row("flux-kontext-pro", "/v1/flux-kontext-pro", AspectRatio, 1, PromptUpsampling, FLUX2_KNOBS, false, 6, secs(120), 0.035, millis(4000)),
        row("flux-pro-1.1-ultra", "/v1/flux-pro-1.1-ultra", AspectRatio, 0, PromptUpsampling, FLUX2_KNOBS, true, 6, secs(120), 0.050, millis(6000)),
        row("flux-pro-1.1", "/v1/flux-pro-1.1", Legacy, 0, PromptUpsampling, FLUX2_KNOBS, false, 6, secs(120), 0.035, millis(3000)),
        row("flux-pro", "/v1/flux-pro", Legacy, 0, PromptUpsampling, legacy, false, 6, secs(120), 0.040, millis(4500)),
        row("flux-dev", "/v1/flux-dev", Legacy, 0, PromptUpsampling, legacy, false, 6, secs(120), 0.020, millis(3000)),
    ]
}

/// The catalog in force: the table with this deployment's overrides applied.
#[derive(Debug, Clone)]
pub struct Catalog {
    models: Vec<Model>,
}

impl Catalog {
    /// Applies overrides; an override naming no model is an error (a typo would otherwise be silent).
    pub fn new(overrides: &HashMap<String, ModelOverride>) -> Result<Catalog, String> {
        let mut models = rows();
        for (id, o) in overrides {
            let model = models
                .iter_mut()
                .find(|m| m.id == id)
                .ok_or_else(|| format!("models.{id}: no such model in the catalog"))?;
            if let Some(s) = o.deadline_secs {
                model.deadline = Duration::from_secs(s);
            }
            if let Some(p) = o.price_usd {
                model.price_usd = p;
            }
        }
        Ok(Catalog { models })
    }

    pub fn get(&self, id: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.id == id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Model> {
        self.models.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_has_a_unique_id_and_a_path_named_after_it() {
        let catalog = Catalog::new(&HashMap::new()).expect("defaults are valid");
        let ids: Vec<_> = catalog.iter().map(|m| m.id).collect();
        assert_eq!(ids.len(), 12);
        for m in catalog.iter() {
            assert_eq!(m.path, format!("/v1/{}", m.id));
            assert_eq!(ids.iter().filter(|id| **id == m.id).count(), 1);
        }
    }

    #[test]
    fn an_override_for_an_unknown_model_is_refused() {
        let overrides = HashMap::from([("flux-3".to_owned(), ModelOverride::default())]);
        assert!(Catalog::new(&overrides).is_err());
    }

    #[test]
    fn overrides_change_deadline_and_price() {
        let overrides = HashMap::from([(
            "flux-dev".to_owned(),
            ModelOverride { deadline_secs: Some(7), price_usd: Some(0.5) },
        )]);
        let catalog = Catalog::new(&overrides).expect("valid override");
        let dev = catalog.get("flux-dev").expect("flux-dev exists");
        assert_eq!(dev.deadline, Duration::from_secs(7));
        assert_eq!(dev.price_usd, 0.5);
    }
}
