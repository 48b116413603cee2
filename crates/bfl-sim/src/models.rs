//! The simulator's own table of BFL endpoints, transcribed from BFL's OpenAPI spec (not from the
//! gateway's catalog, so that the simulator can judge the gateway independently).

/// How an endpoint decides the output size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Sizing {
    /// FLUX.2: `width`/`height` (nullable, ≥ 64, ×16, ≤ 4 MP), else the first input image, else 1024².
    Flux2,
    /// FLUX.1 pro/dev: `width`/`height` integers 256–1440, ×32, defaults 1024×768.
    Legacy,
    /// Kontext: `aspect_ratio` (nullable) at about 1 MP.
    Kontext,
    /// Ultra: `aspect_ratio` (non-nullable string, default 16:9) at about 4 MP.
    Ultra,
}

/// How the prompt field is declared in the endpoint's schema.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum PromptRule {
    /// `prompt: str` with no default.
    Required,
    /// `prompt: str = ""`: may be absent but not null.
    DefaultEmpty,
    /// `prompt: str | None = ""`.
    Nullable,
}

/// Which prompt-upsampling knob the endpoint has.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Upsampling {
    /// FLUX.2 pro/max/pro-preview: always upsampled unless `disable_pup: true`.
    DisablePup,
    /// `prompt_upsampling: bool` with this default; `nullable` when declared `bool | None`.
    Flag { default: bool, nullable: bool },
    /// Klein: no knob, never upsampled.
    Never,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Format {
    Jpeg,
    Png,
    Webp,
}

impl Format {
    pub(super) fn parse(s: &str) -> Option<Format> {
        match s {
            "jpeg" => Some(Format::Jpeg),
            "png" => Some(Format::Png),
            "webp" => Some(Format::Webp),
            _ => None,
        }
    }

    pub(super) fn ext(self) -> &'static str {
        match self {
            Format::Jpeg => "jpeg",
            Format::Png => "png",
            Format::Webp => "webp",
        }
    }

    pub(super) fn content_type(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Webp => "image/webp",
        }
    }
}

/// One BFL endpoint.
#[derive(Debug)]
pub(super) struct Model {
    pub path: &'static str,
    pub sizing: Sizing,
    pub prompt: PromptRule,
    /// How many `input_image*` fields the schema declares (0 = none).
    pub refs: usize,
    pub safety_max: i64,
    pub upsampling: Upsampling,
    pub steps: Option<(i64, i64)>,
    pub guidance: Option<(f64, f64)>,
    /// Ultra's `raw` flag and `image_prompt_strength`.
    pub ultra_knobs: bool,
    /// Legacy and ultra endpoints declare an optional `image_prompt` string.
    pub image_prompt: bool,
    pub default_format: Format,
    /// Nominal job duration in seconds, before `time_scale`.
    pub secs: f64,
    /// Price of a 1 MP image in credits (1 credit = $0.01).
    pub credits: f64,
    /// flux-2-max reports `Reasoning` (grounding search) for the first third of its run.
    pub reasons: bool,
}

const FLUX2: Model = Model {
    path: "",
    sizing: Sizing::Flux2,
    prompt: PromptRule::Required,
    refs: 8,
    safety_max: 5,
    upsampling: Upsampling::DisablePup,
    steps: None,
    guidance: None,
    ultra_knobs: false,
    image_prompt: false,
    default_format: Format::Jpeg,
    secs: 4.0,
    credits: 3.0,
    reasons: false,
};

const LEGACY: Model = Model {
    path: "",
    sizing: Sizing::Legacy,
    prompt: PromptRule::DefaultEmpty,
    refs: 0,
    safety_max: 6,
    upsampling: Upsampling::Flag { default: false, nullable: false },
    steps: Some((1, 50)),
    guidance: Some((1.5, 5.0)),
    ultra_knobs: false,
    image_prompt: true,
    default_format: Format::Jpeg,
    secs: 4.0,
    credits: 2.5,
    reasons: false,
};

const KONTEXT: Model = Model {
    path: "",
    sizing: Sizing::Kontext,
    prompt: PromptRule::Required,
    refs: 4,
    safety_max: 6,
    upsampling: Upsampling::Flag { default: false, nullable: false },
    steps: None,
    guidance: None,
    ultra_knobs: false,
    image_prompt: false,
    // The published FluxKontextProInputs schema defaults to png, unlike every other endpoint.
    default_format: Format::Png,
    secs: 5.0,
    credits: 4.0,
    reasons: false,
};

/// Every endpoint the simulator serves, keyed by the path segment after `/v1/`.
pub(super) static MODELS: &[Model] = &[
    Model { path: "flux-2-max", secs: 8.0, credits: 7.0, reasons: true, ..FLUX2 },
    Model { path: "flux-2-pro", ..FLUX2 },
    Model { path: "flux-2-pro-preview", ..FLUX2 },
    Model {
        path: "flux-2-flex",
        upsampling: Upsampling::Flag { default: true, nullable: true },
        steps: Some((1, 50)),
        guidance: Some((1.5, 10.0)),
        secs: 12.0,
        credits: 6.0,
        ..FLUX2
    },
    Model {
        path: "flux-2-klein-9b",
        refs: 4,
        upsampling: Upsampling::Never,
        secs: 0.6,
        credits: 1.5,
        ..FLUX2
    },
    Model {
        path: "flux-2-klein-4b",
        refs: 4,
        upsampling: Upsampling::Never,
        secs: 0.6,
        credits: 1.0,
        ..FLUX2
    },
    Model {
        path: "flux-2-klein-9b-preview",
        refs: 4,
        upsampling: Upsampling::Never,
        secs: 0.5,
        credits: 1.5,
        ..FLUX2
    },
    Model { path: "flux-kontext-max", credits: 8.0, ..KONTEXT },
    Model { path: "flux-kontext-pro", ..KONTEXT },
    Model {
        path: "flux-pro-1.1-ultra",
        sizing: Sizing::Ultra,
        prompt: PromptRule::Nullable,
        steps: None,
        guidance: None,
        ultra_knobs: true,
        secs: 8.0,
        credits: 6.0,
        ..LEGACY
    },
    Model {
        path: "flux-pro-1.1",
        prompt: PromptRule::Nullable,
        steps: None,
        guidance: None,
        credits: 4.0,
        ..LEGACY
    },
    // flux-pro has no published schema; it behaves like flux-dev with its own defaults.
    Model { path: "flux-pro", secs: 6.0, credits: 5.0, ..LEGACY },
    Model { path: "flux-dev", ..LEGACY },
];

/// The endpoint served at `/v1/{path}`, if any.
pub(super) fn find(path: &str) -> Option<&'static Model> {
    MODELS.iter().find(|m| m.path == path)
}

/// The endpoint with its own per-key cap on top of the global one.
pub(super) const KONTEXT_MAX: &str = "flux-kontext-max";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_of_the_brief_is_served_and_nothing_else() {
        let paths: Vec<_> = MODELS.iter().map(|m| m.path).collect();
        assert_eq!(paths.len(), 13);
        assert!(find("flux-2-klein-9b-preview").is_some_and(|m| m.refs == 4));
        assert!(find("flux-2-klein-4b").is_some_and(|m| m.refs == 4));
        assert!(find("flux-kontext-max").is_some_and(|m| m.default_format == Format::Png));
        assert!(find("flux-pro-1.0-fill").is_none());
    }
}
