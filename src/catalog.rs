//! The model table: the only place a model's facts live (PRODUCT.md section 1), with the
//! per-model overrides a deployment may set.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// The client's model id; BFL serves it at `/v1/{id}`.
    pub id: &'static str,
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

impl Model {
    /// Path on the BFL API, e.g. `/v1/flux-2-pro`.
    pub fn path(&self) -> String {
        format!("/v1/{}", self.id)
    }
}

/// Catalog defaults a deployment may change for one model (`[models."<id>"]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelOverride {
    pub deadline_secs: Option<u64>,
    pub price_usd: Option<f64>,
}

const STEPS: Knob<u32> = Knob { min: 1, max: 50 };

/// The FLUX.2 family; other rows name what differs.
const FLUX2: Model = Model {
    id: "",
    sizing: Sizing::Flux2,
    max_refs: 8,
    upsampling: Upsampling::DisablePup,
    steps: None,
    guidance: None,
    raw: false,
    safety_max: 5,
    deadline: Duration::from_secs(120),
    price_usd: 0.030,
    expected: Duration::from_millis(3000),
    slot_class: SlotClass::General,
};

const KLEIN: Model = Model {
    max_refs: 4,
    upsampling: Upsampling::Ignored,
    deadline: Duration::from_secs(60),
    price_usd: 0.010,
    expected: Duration::from_millis(400),
    ..FLUX2
};

const KONTEXT: Model = Model {
    sizing: Sizing::AspectRatio,
    max_refs: 1,
    upsampling: Upsampling::PromptUpsampling,
    safety_max: 6,
    price_usd: 0.035,
    expected: Duration::from_millis(4000),
    ..FLUX2
};

/// FLUX.1 width/height models: generation only.
const LEGACY: Model = Model {
    sizing: Sizing::Legacy,
    max_refs: 0,
    upsampling: Upsampling::PromptUpsampling,
    safety_max: 6,
    ..FLUX2
};

const LEGACY_KNOBS: (Option<Knob<u32>>, Option<Knob<f64>>) = (Some(STEPS), Some(Knob { min: 1.5, max: 5.0 }));

/// The rows of PRODUCT.md section 1, before configuration overrides.
const ROWS: &[Model] = &[
    Model { id: "flux-2-max", price_usd: 0.070, expected: Duration::from_millis(6000), ..FLUX2 },
    Model { id: "flux-2-pro", ..FLUX2 },
    Model { id: "flux-2-pro-preview", ..FLUX2 },
    Model {
        id: "flux-2-flex",
        upsampling: Upsampling::PromptUpsampling,
        steps: Some(STEPS),
        guidance: Some(Knob { min: 1.5, max: 10.0 }),
        deadline: Duration::from_secs(180),
        price_usd: 0.060,
        expected: Duration::from_millis(9000),
        ..FLUX2
    },
    Model { id: "flux-2-klein-9b", ..KLEIN },
    Model { id: "flux-2-klein-4b", ..KLEIN },
    Model { id: "flux-2-klein-9b-preview", price_usd: 0.015, ..KLEIN },
    Model { id: "flux-kontext-max", price_usd: 0.070, slot_class: SlotClass::KontextMax, ..KONTEXT },
    Model { id: "flux-kontext-pro", ..KONTEXT },
    Model {
        id: "flux-pro-1.1-ultra",
        sizing: Sizing::AspectRatio,
        raw: true,
        price_usd: 0.050,
        expected: Duration::from_millis(6000),
        ..LEGACY
    },
    Model { id: "flux-pro-1.1", price_usd: 0.035, ..LEGACY },
    Model {
        id: "flux-pro",
        steps: LEGACY_KNOBS.0,
        guidance: LEGACY_KNOBS.1,
        price_usd: 0.040,
        expected: Duration::from_millis(4500),
        ..LEGACY
    },
    Model { id: "flux-dev", steps: LEGACY_KNOBS.0, guidance: LEGACY_KNOBS.1, price_usd: 0.020, ..LEGACY },
];

/// Longest deadline a deployment may give a model (a BFL result URL lives 10 minutes anyway).
const MAX_DEADLINE_SECS: u64 = 3600;

/// Why the configured overrides cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("models.{0}: no such model in the catalog")]
    UnknownModel(String),
    #[error("models.{0}: deadline_secs must be 1 to 3600 and price_usd not negative")]
    BadOverride(String),
    #[error("models.aliases.{0}: {1}")]
    BadAlias(String, String),
}

/// The catalog in force: the table with this deployment's overrides applied.
#[derive(Debug, Clone)]
pub struct Catalog {
    models: Vec<Model>,
    /// Other names clients may use for a model (`[models.aliases]`, e.g. "dall-e-3").
    aliases: HashMap<String, &'static str>,
}

impl Catalog {
    /// Applies overrides; an override naming no model is an error (a typo would otherwise be silent).
    pub fn new(overrides: &HashMap<String, ModelOverride>) -> Result<Catalog, CatalogError> {
        let mut models = ROWS.to_vec();
        for (id, o) in overrides {
            let model = models
                .iter_mut()
                .find(|m| m.id == id)
                .ok_or_else(|| CatalogError::UnknownModel(id.clone()))?;
            let deadline_ok = o.deadline_secs.is_none_or(|d| (1..=MAX_DEADLINE_SECS).contains(&d));
            if !deadline_ok || o.price_usd.is_some_and(|p| p.is_nan() || p < 0.0) {
                return Err(CatalogError::BadOverride(id.clone()));
            }
            if let Some(s) = o.deadline_secs {
                model.deadline = Duration::from_secs(s);
            }
            if let Some(p) = o.price_usd {
                model.price_usd = p;
            }
        }
        Ok(Catalog { models, aliases: HashMap::new() })
    }

    /// Adds other names for models; an alias must name a model and may not hide one.
    pub fn with_aliases(mut self, aliases: &HashMap<String, String>) -> Result<Catalog, CatalogError> {
        for (alias, target) in aliases {
            if self.models.iter().any(|m| m.id == alias) {
                return Err(CatalogError::BadAlias(alias.clone(), "it is already a model id".into()));
            }
            let model =
                self.models.iter().find(|m| m.id == target).ok_or_else(|| {
                    CatalogError::BadAlias(alias.clone(), format!("`{target}` is not a model"))
                })?;
            self.aliases.insert(alias.clone(), model.id);
        }
        Ok(self)
    }

    /// The model named `id`, or the one `id` is an alias of.
    pub fn get(&self, id: &str) -> Option<&Model> {
        let id = self.aliases.get(id).copied().unwrap_or(id);
        self.models.iter().find(|m| m.id == id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Model> {
        self.models.iter()
    }

    /// The longest deadline of any model.
    pub fn longest_deadline(&self) -> Duration {
        self.models.iter().map(|m| m.deadline).max().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_has_a_unique_id_and_a_path_named_after_it() {
        let catalog = Catalog::new(&HashMap::new()).expect("defaults are valid");
        let ids: Vec<_> = catalog.iter().map(|m| m.id).collect();
        assert_eq!(ids.len(), 13);
        for m in catalog.iter() {
            assert!(!m.id.is_empty());
            assert_eq!(m.path(), format!("/v1/{}", m.id));
            assert_eq!(ids.iter().filter(|id| **id == m.id).count(), 1);
        }
    }

    #[test]
    fn rows_match_the_product_table() {
        let catalog = Catalog::new(&HashMap::new()).expect("defaults are valid");
        let row = |id: &str| catalog.get(id).expect("in the catalog").clone();
        let preview = row("flux-2-klein-9b-preview");
        assert_eq!(
            (preview.max_refs, preview.price_usd, preview.upsampling),
            (4, 0.015, Upsampling::Ignored)
        );
        assert_eq!(preview.deadline, Duration::from_secs(60));
        assert_eq!(row("flux-kontext-max").slot_class, SlotClass::KontextMax);
        assert_eq!(row("flux-2-flex").deadline, Duration::from_secs(180));
        assert!(row("flux-pro-1.1-ultra").raw && row("flux-pro-1.1-ultra").max_refs == 0);
        assert_eq!(row("flux-pro-1.1").steps, None);
        assert_eq!(row("flux-dev").guidance.map(|g| g.max), Some(5.0));
        assert_eq!(row("flux-2-max").price_usd, 0.070);
    }

    #[test]
    fn an_alias_resolves_to_its_model_and_cannot_hide_or_invent_one() {
        let aliases = HashMap::from([("dall-e-3".to_owned(), "flux-2-pro".to_owned())]);
        let catalog = Catalog::new(&HashMap::new()).expect("defaults").with_aliases(&aliases).expect("valid");
        assert_eq!(catalog.get("dall-e-3").map(|m| m.id), Some("flux-2-pro"));
        assert_eq!(catalog.iter().count(), 13, "aliases are not models");
        let hiding = HashMap::from([("flux-dev".to_owned(), "flux-2-pro".to_owned())]);
        assert!(Catalog::new(&HashMap::new()).expect("defaults").with_aliases(&hiding).is_err());
        let dangling = HashMap::from([("dall-e-2".to_owned(), "flux-9".to_owned())]);
        assert!(Catalog::new(&HashMap::new()).expect("defaults").with_aliases(&dangling).is_err());
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
