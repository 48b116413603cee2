//! Typed settings: `config/default.toml` (built in) → `--config FILE` → `FLUXGATE__…` environment,
//! parsed once at start-up into values that cannot be wrong.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use reqwest::Url;
use secrecy::SecretString;
use serde::Deserialize;

use crate::bfl::AllowList;
use crate::dispatch::{KeyBudget, PoolLimits};
use crate::upload::UploadLimits;

const DEFAULTS: &str = include_str!("../config/default.toml");

/// Why the configuration cannot be used; printed as the one-line reason start-up failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, reason: reason.into() }
}

#[derive(Debug, Deserialize)]
struct RawSettings {
    server: RawServer,
    upstream: RawUpstream,
    uploads: RawUploads,
    #[serde(default)]
    models: HashMap<String, ModelOverride>,
}

#[derive(Debug, Deserialize)]
struct RawServer {
    listen: String,
    api_keys: Vec<String>,
    max_json_bytes: usize,
    default_model: String,
    drain_delay_ms: u64,
    shutdown_grace_secs: u64,
}

#[derive(Debug, Deserialize)]
struct RawUpstream {
    base_url: String,
    keys: Vec<String>,
    allowed_hosts: Vec<String>,
    allow_http: bool,
    connect_timeout_ms: u64,
    request_timeout_ms: u64,
    submit_retries: u32,
    retry_base_ms: u64,
    poll_interval_ms: u64,
    not_found_grace_ms: u64,
    max_result_bytes: usize,
    first_poll_scale: f64,
    max_idle_connections: usize,
    task_cap: usize,
    kontext_max_cap: usize,
    key_caps: Vec<String>,
    queue_max: usize,
    queue_wait_ms: u64,
    credit_cooldown_secs: u64,
    poll_timeout_ms: u64,
}

#[derive(Debug, Deserialize)]
struct RawUploads {
    max_file_bytes: u64,
    max_parts: usize,
    memory_threshold: usize,
    spool_dir: String,
    max_json_bytes: usize,
}

/// Catalog defaults a deployment may change for one model.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ModelOverride {
    pub deadline_secs: Option<u64>,
    pub price_usd: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub upstream: UpstreamSettings,
    pub uploads: UploadSettings,
    pub models: HashMap<String, ModelOverride>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub api_keys: Vec<SecretString>,
    pub max_json_bytes: usize,
    pub default_model: String,
    pub drain_delay: Duration,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct UploadSettings {
    pub limits: UploadLimits,
    pub max_json_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub base_url: Url,
    /// Every key with its slot budget.
    pub keys: Vec<KeyBudget>,
    pub allow: AllowList,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub submit_retries: u32,
    pub retry_base: Duration,
    pub poll_interval: Duration,
    pub not_found_grace: Duration,
    pub max_result_bytes: usize,
    pub first_poll_scale: f64,
    pub pool: PoolLimits,
    pub poll_timeout: Duration,
    pub max_idle_connections: usize,
}

/// Where settings come from, in increasing priority.
#[derive(Debug, Default)]
pub struct Sources<'a> {
    /// An extra TOML layer applied right after the defaults (demo mode uses it).
    pub overlay: Option<&'a str>,
    /// The file named by `--config`.
    pub file: Option<&'a Path>,
    /// Values forced over everything else, as (dotted key, value).
    pub overrides: Vec<(&'a str, config::Value)>,
}

impl Settings {
    /// Loads every layer and validates the result.
    pub fn load(sources: Sources<'_>) -> Result<Settings, ConfigError> {
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(overlay) = sources.overlay {
            builder = builder.add_source(File::from_str(overlay, FileFormat::Toml));
        }
        if let Some(path) = sources.file {
            builder = builder.add_source(File::from(path).required(true));
        }
        builder = builder.add_source(
            Environment::with_prefix("FLUXGATE")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("server.api_keys")
                .with_list_parse_key("upstream.keys")
                .with_list_parse_key("upstream.allowed_hosts")
                .with_list_parse_key("upstream.key_caps"),
        );
        for (key, value) in sources.overrides {
            builder = builder.set_override(key, value)?;
        }
        let raw: RawSettings = builder.build()?.try_deserialize()?;
        Settings::try_from(raw)
    }
}

impl TryFrom<RawSettings> for Settings {
    type Error = ConfigError;

    fn try_from(raw: RawSettings) -> Result<Self, ConfigError> {
        let listen = raw.server.listen.parse().map_err(|_| {
            invalid("server.listen", format!("`{}` is not an address like 0.0.0.0:8080", raw.server.listen))
        })?;
        let allow = AllowList::new(&raw.upstream.allowed_hosts, raw.upstream.allow_http)
            .map_err(|reason| invalid("upstream.allowed_hosts", reason))?;
        let base_url = Url::parse(raw.upstream.base_url.trim_end_matches('/'))
            .map_err(|e| invalid("upstream.base_url", e.to_string()))?;
        if !allow.permits(&base_url) {
            return Err(invalid(
                "upstream.base_url",
                format!(
                    "{base_url} is not on upstream.allowed_hosts (or is http without upstream.allow_http)"
                ),
            ));
        }
        let mut keys = split_keys(&raw.upstream.keys);
        if keys.is_empty()
            && let Ok(env_key) = std::env::var("BFL_API_KEY")
        {
            keys = split_keys(&[env_key]);
        }
        if raw.server.max_json_bytes < 1024 {
            return Err(invalid("server.max_json_bytes", "must be at least 1024"));
        }
        if raw.upstream.poll_interval_ms == 0 || raw.upstream.request_timeout_ms == 0 {
            return Err(invalid("upstream", "poll_interval_ms and request_timeout_ms must be positive"));
        }
        let scale = raw.upstream.first_poll_scale;
        if !(scale.is_finite() && scale > 0.0 && scale <= 10.0) {
            return Err(invalid("upstream.first_poll_scale", "must be above 0 and at most 10"));
        }
        for (id, o) in &raw.models {
            if o.deadline_secs == Some(0) || o.price_usd.is_some_and(|p| p.is_nan() || p < 0.0) {
                return Err(ConfigError::Invalid {
                    key: "models",
                    reason: format!("{id}: deadline_secs must be positive and price_usd not negative"),
                });
            }
        }
        Ok(Settings {
            server: ServerSettings {
                listen,
                api_keys: split_keys(&raw.server.api_keys),
                max_json_bytes: raw.server.max_json_bytes,
                default_model: raw.server.default_model,
                drain_delay: Duration::from_millis(raw.server.drain_delay_ms),
                shutdown_grace: Duration::from_secs(raw.server.shutdown_grace_secs),
            },
            upstream: UpstreamSettings {
                base_url,
                keys: budgets(keys, &raw.upstream)?,
                allow,
                connect_timeout: Duration::from_millis(raw.upstream.connect_timeout_ms),
                request_timeout: Duration::from_millis(raw.upstream.request_timeout_ms),
                submit_retries: raw.upstream.submit_retries,
                retry_base: Duration::from_millis(raw.upstream.retry_base_ms),
                poll_interval: Duration::from_millis(raw.upstream.poll_interval_ms),
                not_found_grace: Duration::from_millis(raw.upstream.not_found_grace_ms),
                max_result_bytes: raw.upstream.max_result_bytes,
                first_poll_scale: raw.upstream.first_poll_scale,
                pool: PoolLimits {
                    queue_max: raw.upstream.queue_max,
                    queue_wait: Duration::from_millis(raw.upstream.queue_wait_ms),
                    credit_cooldown: Duration::from_secs(raw.upstream.credit_cooldown_secs),
                },
                poll_timeout: Duration::from_millis(raw.upstream.poll_timeout_ms),
                max_idle_connections: raw.upstream.max_idle_connections,
            },
            uploads: uploads(&raw.uploads)?,
            models: raw.models,
        })
    }
}

fn uploads(raw: &RawUploads) -> Result<UploadSettings, ConfigError> {
    if raw.max_file_bytes == 0 || raw.max_parts == 0 || raw.max_json_bytes < 1024 {
        return Err(invalid(
            "uploads",
            "max_file_bytes and max_parts must be positive, max_json_bytes at least 1024",
        ));
    }
    let spool_dir = raw.spool_dir.trim();
    Ok(UploadSettings {
        limits: UploadLimits {
            max_file_bytes: raw.max_file_bytes,
            max_parts: raw.max_parts,
            memory_threshold: raw.memory_threshold,
            spool_dir: (!spool_dir.is_empty()).then(|| spool_dir.into()),
            ..UploadLimits::default()
        },
        max_json_bytes: raw.max_json_bytes,
    })
}

/// Pairs each key with its budget: `key_caps[i]` ("TASKS" or "TASKS/KONTEXT_MAX") or the defaults.
fn budgets(keys: Vec<SecretString>, raw: &RawUpstream) -> Result<Vec<KeyBudget>, ConfigError> {
    if raw.task_cap == 0 || raw.poll_timeout_ms == 0 {
        return Err(invalid("upstream", "task_cap and poll_timeout_ms must be positive"));
    }
    if raw.key_caps.len() > keys.len() {
        return Err(invalid("upstream.key_caps", "more entries than upstream.keys"));
    }
    keys.into_iter()
        .enumerate()
        .map(|(i, key)| {
            let (tasks, kontext_max) = match raw.key_caps.get(i).map(|c| c.trim()) {
                None => (raw.task_cap, raw.kontext_max_cap),
                Some(cap) => {
                    let bad =
                        || invalid("upstream.key_caps", format!("`{cap}` is not TASKS or TASKS/KONTEXT_MAX"));
                    let (t, k) = cap.split_once('/').unwrap_or((cap, ""));
                    let t: usize = t.trim().parse().map_err(|_| bad())?;
                    let k: usize = if k.is_empty() {
                        raw.kontext_max_cap
                    } else {
                        k.trim().parse().map_err(|_| bad())?
                    };
                    (t, k)
                }
            };
            Ok(KeyBudget { key, tasks, kontext_max: kontext_max.min(tasks) })
        })
        .collect()
}

/// Keys may arrive as a list or as one comma-separated string; blanks are dropped.
fn split_keys(values: &[String]) -> Vec<SecretString> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| SecretString::from(k.to_owned()))
        .collect()
}
