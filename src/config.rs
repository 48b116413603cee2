//! Typed settings: `config/default.toml` (built in) → `--config FILE` → `FLUXGATE__…` environment,
//! parsed once at start-up into each module's own settings type. This is the one place that knows
//! the key names; a key or variable that names nothing stops start-up with one line naming it.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use config::{Config, Environment, File, FileFormat, Value, ValueKind};
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::batch::BatchSettings;
use crate::bfl::{AllowList, BflSettings};
use crate::capacity::{CapacitySettings, KeyBudget, KeyId};
use crate::catalog::ModelOverride;
use crate::clients::{AuthMode, Budget, ClientConfig, ClientSettings, Period};
use crate::coordination::CoordinationSettings;
use crate::delivery::{DeliverySettings, S3Settings, StoreChoice};
use crate::dispatch::{BflWebhookSettings, DispatchSettings, PollSchedule};
use crate::job::{JobRules, ResponseFormat};
use crate::records::StoreSettings;
use crate::state::ServerSettings;
use crate::telemetry::{LogFormat, TelemetrySettings};
use crate::upload::{UploadLimits, UploadSettings};
use crate::usage::UsageSettings;
use crate::webhooks::{WebhookSecret, WebhookSettings};

const DEFAULTS: &str = include_str!("../config/default.toml");
const ENV_PREFIX: &str = "FLUXGATE__";
/// Settings that are lists: comma-separated in the environment.
const LIST_KEYS: [&str; 7] = [
    "server.api_keys",
    "upstream.keys",
    "upstream.key_names",
    "upstream.allowed_hosts",
    "upstream.key_caps",
    "jobs.webhook_allowed_hosts",
    "delivery.cors_origins",
];

/// Why the configuration cannot be used; printed as the one-line reason start-up failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("configuration: unknown key `{key}` in {origin} (every key is listed in config/default.toml)")]
    UnknownKey { key: String, origin: String },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, reason: reason.into() }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    #[serde(default)]
    clients: Vec<RawClient>,
    server: RawServer,
    upstream: RawUpstream,
    uploads: RawUploads,
    jobs: RawJobs,
    delivery: RawDelivery,
    usage: RawUsage,
    coordination: RawCoordination,
    telemetry: RawTelemetry,
    #[serde(default)]
    models: RawModels,
}

/// `[models]`: per-model overrides by id, and `[models.aliases]`.
#[derive(Debug, Default, Deserialize)]
struct RawModels {
    #[serde(default)]
    aliases: HashMap<String, String>,
    #[serde(flatten)]
    overrides: HashMap<String, ModelOverride>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: String,
    #[serde(deserialize_with = "strings")]
    api_keys: Vec<String>,
    auth: String,
    admin_token_sha256: String,
    max_json_bytes: usize,
    default_model: String,
    drain_delay_ms: u64,
    shutdown_grace_secs: u64,
    header_timeout_ms: u64,
    body_timeout_ms: u64,
    idle_timeout_ms: u64,
    max_connections: usize,
    playground: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    base_url: String,
    #[serde(deserialize_with = "strings")]
    keys: Vec<String>,
    #[serde(deserialize_with = "strings")]
    key_names: Vec<String>,
    #[serde(deserialize_with = "strings")]
    allowed_hosts: Vec<String>,
    allow_http: bool,
    connect_timeout_ms: u64,
    request_timeout_ms: u64,
    submit_retries: u32,
    retry_base_ms: u64,
    poll_interval_ms: u64,
    poll_schedule: String,
    not_found_grace_ms: u64,
    max_result_bytes: usize,
    max_b64_inflight_bytes: usize,
    first_poll_scale: f64,
    max_idle_connections: usize,
    task_cap: usize,
    kontext_max_cap: usize,
    #[serde(deserialize_with = "strings")]
    key_caps: Vec<String>,
    queue_max: usize,
    queue_wait_ms: u64,
    credit_cooldown_secs: u64,
    poll_timeout_ms: u64,
    max_task_lifetime_secs: u64,
    webhook_base_url: String,
    webhook_secret: SecretString,
    webhook_poll_interval_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUploads {
    max_file_bytes: u64,
    max_parts: usize,
    memory_threshold: usize,
    spool_dir: String,
    max_json_bytes: usize,
    max_request_bytes: u64,
    max_spool_bytes: u64,
    max_json_inflight_bytes: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJobs {
    result_ttl_secs: u64,
    max_records: usize,
    max_n: u32,
    idempotency_ttl_secs: u64,
    webhook_secret: SecretString,
    #[serde(deserialize_with = "strings")]
    webhook_allowed_hosts: Vec<String>,
    webhook_retry_base_ms: u64,
    webhook_max_attempts: u32,
    webhook_max_pending: usize,
    webhook_timeout_ms: u64,
}

/// One `[[clients]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    id: String,
    token_sha256: String,
    models: Option<Vec<String>>,
    requests_per_minute: Option<u32>,
    max_concurrent_jobs: Option<u32>,
    budget_usd: Option<f64>,
    budget_period: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCoordination {
    backend: String,
    redis_url: String,
    lease_secs: u64,
    degraded_share: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUsage {
    path: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    default_response_format: String,
    keepalive_secs: u64,
    store: String,
    local_dir: String,
    s3_bucket: String,
    s3_region: String,
    s3_endpoint: String,
    s3_path_style: bool,
    s3_prefix: String,
    s3_access_key_id: String,
    #[serde(deserialize_with = "secret")]
    s3_secret_access_key: SecretString,
    public_base_url: String,
    link_base_url: String,
    #[serde(deserialize_with = "secret")]
    signing_key: SecretString,
    link_ttl_secs: u64,
    retention_secs: u64,
    #[serde(deserialize_with = "strings")]
    cors_origins: Vec<String>,
    store_timeout_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    log_format: String,
    log_prompts: bool,
    otlp_endpoint: String,
}

/// Every module's settings, as configured.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub clients: ClientSettings,
    pub usage: UsageSettings,
    /// `None`: each process counts its own slots; `Some`: replicas share them through Redis.
    pub coordination: Option<CoordinationSettings>,
    pub telemetry: TelemetrySettings,
    pub upstream: BflSettings,
    pub capacity: CapacitySettings,
    pub dispatch: DispatchSettings,
    pub delivery: DeliverySettings,
    pub uploads: UploadSettings,
    pub jobs: StoreSettings,
    pub batches: BatchSettings,
    pub models: HashMap<String, ModelOverride>,
    /// Other names for models (`[models.aliases]`).
    pub aliases: HashMap<String, String>,
    pub job_rules: JobRules,
    /// Outgoing webhooks (`jobs.webhook_*`).
    pub webhooks: WebhookSettings,
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
    /// Loads every layer, refuses keys that name nothing, and validates the result.
    pub fn load(sources: Sources<'_>) -> Result<Settings, ConfigError> {
        let known =
            keys_of(&Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml)).build()?)?;
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(overlay) = sources.overlay {
            builder = builder.add_source(File::from_str(overlay, FileFormat::Toml));
        }
        if let Some(path) = sources.file {
            let file = Config::builder().add_source(File::from(path).required(true)).build()?;
            check_known(&known, keys_of(&file)?, || path.display().to_string())?;
            builder = builder.add_source(File::from(path).required(true));
        }
        let variables = std::env::vars_os()
            .filter_map(|(name, _)| name.into_string().ok())
            // The environment source matches the prefix in any case, so this check does too.
            .filter_map(|name| {
                let prefixed = name.len() > ENV_PREFIX.len()
                    && name.is_char_boundary(ENV_PREFIX.len())
                    && name[..ENV_PREFIX.len()].eq_ignore_ascii_case(ENV_PREFIX);
                prefixed.then(|| (name.clone(), name[ENV_PREFIX.len()..].to_owned()))
            });
        for (name, rest) in variables {
            let key = rest.split("__").collect::<Vec<_>>().join(".").to_ascii_lowercase();
            check_known(&known, [key], || format!("the environment ({name})"))?;
        }
        builder = builder.add_source(
            Environment::with_prefix("FLUXGATE").prefix_separator("__").separator("__").try_parsing(true),
        );
        // List variables are split here, as written: the environment source would turn a value
        // that looks like a number into one first (a token `0123` would become 123).
        for key in LIST_KEYS {
            let name = format!("{ENV_PREFIX}{}", key.replace('.', "__")).to_ascii_uppercase();
            if let Some(raw) = std::env::vars().find_map(|(n, v)| n.eq_ignore_ascii_case(&name).then_some(v))
            {
                let items: Vec<String> = raw.split(',').map(str::to_owned).collect();
                builder = builder.set_override(key, items)?;
            }
        }
        for (key, value) in sources.overrides {
            builder = builder.set_override(key, value)?;
        }
        let raw: RawSettings = builder.build()?.try_deserialize()?;
        Settings::try_from(raw)
    }
}

/// A list of strings that may arrive as a list, or (from the environment) as one value that
/// looks like a number or a boolean: `FLUXGATE__UPSTREAM__KEY_CAPS=48` is the list `["48"]`.
fn strings<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<Scalar>),
        One(Scalar),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::Many(items) => items.into_iter().map(Scalar::text).collect(),
        OneOrMany::One(item) => vec![item.text()],
    })
}

/// One value the environment source may have turned into a number or a boolean.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
    Flag(bool),
}

impl Scalar {
    fn text(self) -> String {
        match self {
            Scalar::Text(t) => t,
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Flag(b) => b.to_string(),
        }
    }
}

/// A secret given as text (a key of digits from the environment arrives as a number).
fn secret<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<SecretString, D::Error> {
    Ok(SecretString::from(Scalar::deserialize(deserializer)?.text()))
}

/// Every leaf key of `config`, dotted (`server.listen`).
fn keys_of(config: &Config) -> Result<BTreeSet<String>, ConfigError> {
    fn walk(prefix: &str, table: &HashMap<String, Value>, out: &mut BTreeSet<String>) {
        for (name, value) in table {
            let key = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
            match &value.kind {
                ValueKind::Table(inner) if !inner.is_empty() => walk(&key, inner, out),
                ValueKind::Nil
                | ValueKind::Boolean(_)
                | ValueKind::I64(_)
                | ValueKind::I128(_)
                | ValueKind::U64(_)
                | ValueKind::U128(_)
                | ValueKind::Float(_)
                | ValueKind::String(_)
                | ValueKind::Table(_)
                | ValueKind::Array(_) => {
                    out.insert(key);
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk("", &config.clone().try_deserialize::<HashMap<String, Value>>()?, &mut out);
    Ok(out)
}

/// `models.<id>.<field>` is open-ended (checked against the catalog and `ModelOverride`); every
/// other key must be one of the defaults'.
fn check_known(
    known: &BTreeSet<String>,
    keys: impl IntoIterator<Item = String>,
    origin: impl Fn() -> String,
) -> Result<(), ConfigError> {
    for key in keys {
        // An empty table (a section header with every key commented out) names nothing wrong.
        let section =
            known.iter().any(|k| k.strip_prefix(key.as_str()).is_some_and(|rest| rest.starts_with('.')));
        if !(known.contains(&key) || section || key == "models" || key.starts_with("models.")) {
            return Err(ConfigError::UnknownKey { key, origin: origin() });
        }
    }
    Ok(())
}

impl TryFrom<RawSettings> for Settings {
    type Error = ConfigError;

    fn try_from(raw: RawSettings) -> Result<Self, ConfigError> {
        let RawSettings {
            clients,
            server,
            upstream,
            uploads,
            jobs,
            delivery,
            usage,
            coordination,
            telemetry,
            models,
        } = raw;
        let shared_webhooks = coordination.backend.trim() == "redis"
            && !upstream.webhook_base_url.trim().is_empty()
            && secrecy::ExposeSecret::expose_secret(&upstream.webhook_secret).trim().is_empty();
        if shared_webhooks {
            // Another replica must be able to check a webhook for this one's job.
            return Err(invalid(
                "upstream.webhook_secret",
                "must be set (the same on every replica) when replicas share Redis and BFL webhooks are on",
            ));
        }
        Ok(Settings {
            coordination: coordination_settings(&coordination)?,
            clients: client_settings(&server, clients)?,
            usage: UsageSettings { path: (!usage.path.trim().is_empty()).then(|| usage.path.trim().into()) },
            server: server_settings(server, &telemetry)?,
            telemetry: telemetry_settings(&telemetry)?,
            capacity: capacity_settings(&upstream)?,
            dispatch: dispatch_settings(&upstream)?,
            delivery: delivery_settings(&upstream, &delivery)?,
            upstream: bfl_settings(&upstream)?,
            uploads: upload_settings(&uploads)?,
            job_rules: job_rules(&jobs, &delivery)?,
            batches: batch_settings(&jobs)?,
            webhooks: webhook_settings(&jobs)?,
            jobs: store_settings(&jobs)?,
            models: models.overrides,
            aliases: models.aliases,
        })
    }
}

/// One day: no duration setting needs more, and a bound keeps `Instant + Duration` from
/// overflowing on a typo.
const MAX_SECS: u64 = 86_400;

/// Refuses a duration setting above a day.
fn at_most_a_day(key: &'static str, secs: u64) -> Result<(), ConfigError> {
    if secs > MAX_SECS {
        return Err(invalid(key, format!("must be at most {MAX_SECS} s (one day)")));
    }
    Ok(())
}

fn server_settings(raw: RawServer, telemetry: &RawTelemetry) -> Result<ServerSettings, ConfigError> {
    at_most_a_day("server.drain_delay_ms", raw.drain_delay_ms / 1000)?;
    at_most_a_day("server.shutdown_grace_secs", raw.shutdown_grace_secs)?;
    at_most_a_day("server.header_timeout_ms", raw.header_timeout_ms / 1000)?;
    at_most_a_day("server.body_timeout_ms", raw.body_timeout_ms / 1000)?;
    at_most_a_day("server.idle_timeout_ms", raw.idle_timeout_ms / 1000)?;
    let listen = raw.listen.parse().map_err(|_| {
        invalid("server.listen", format!("`{}` is not an address like 0.0.0.0:8080", raw.listen))
    })?;
    if raw.max_json_bytes < 1024 {
        return Err(invalid("server.max_json_bytes", "must be at least 1024"));
    }
    if raw.header_timeout_ms == 0 || raw.body_timeout_ms == 0 || raw.idle_timeout_ms == 0 {
        return Err(invalid(
            "server",
            "header_timeout_ms, body_timeout_ms and idle_timeout_ms must be positive",
        ));
    }
    if raw.max_connections == 0 {
        return Err(invalid("server.max_connections", "must be positive"));
    }
    Ok(ServerSettings {
        listen,
        max_json_bytes: raw.max_json_bytes,
        default_model: raw.default_model,
        drain_delay: Duration::from_millis(raw.drain_delay_ms),
        shutdown_grace: Duration::from_secs(raw.shutdown_grace_secs),
        header_timeout: Duration::from_millis(raw.header_timeout_ms),
        body_timeout: Duration::from_millis(raw.body_timeout_ms),
        idle_timeout: Duration::from_millis(raw.idle_timeout_ms),
        max_connections: raw.max_connections,
        playground: raw.playground,
        log_prompts: telemetry.log_prompts,
    })
}

fn client_settings(server: &RawServer, raw: Vec<RawClient>) -> Result<ClientSettings, ConfigError> {
    let auth = match server.auth.trim() {
        "keys" => AuthMode::Keys,
        "none" => AuthMode::None,
        other => return Err(invalid("server.auth", format!("`{other}` is not \"keys\" or \"none\""))),
    };
    let digest = |key: &'static str, hex_digest: &str| -> Result<[u8; 32], ConfigError> {
        let bytes = hex::decode(hex_digest.trim()).map_err(|_| {
            invalid(key, "must be 64 hex digits (the SHA-256 of the token; see `fluxgate keys new`)")
        })?;
        <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
            invalid(key, "must be 64 hex digits (the SHA-256 of the token; see `fluxgate keys new`)")
        })
    };
    let mut clients = Vec::with_capacity(raw.len());
    let mut seen = BTreeSet::new();
    for c in raw {
        let id = c.id.trim().to_owned();
        let plain = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        // `anonymous` and `key-…` name the open gateway's caller and legacy tokens.
        if id.is_empty() || id.len() > 64 || !plain(&id) || id == "anonymous" || id.starts_with("key-") {
            return Err(invalid(
                "clients.id",
                format!(
                    "`{id}` must be 1 to 64 letters, digits, `-`, `_` or `.` (and neither `anonymous` nor starting with `key-`)"
                ),
            ));
        }
        if !seen.insert(id.clone()) {
            return Err(invalid("clients.id", format!("`{id}` is used twice")));
        }
        let budget = match (c.budget_usd, c.budget_period.as_deref().map(str::trim)) {
            (None, None) => None,
            (Some(usd), period) if usd.is_finite() && usd >= 0.0 => Some(Budget {
                usd,
                period: match period {
                    None | Some("month") => Period::Month,
                    Some("day") => Period::Day,
                    Some(other) => {
                        return Err(invalid(
                            "clients.budget_period",
                            format!("`{other}` is not \"day\" or \"month\""),
                        ));
                    }
                },
            }),
            (Some(_), _) => {
                return Err(invalid(
                    "clients.budget_usd",
                    format!("client `{id}`: must be a positive number"),
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "clients.budget_period",
                    format!("client `{id}`: a period needs budget_usd"),
                ));
            }
        };
        let positive = |key: &'static str, v: Option<u32>| match v {
            None => Ok(None),
            Some(n) => NonZeroU32::new(n).map(Some).ok_or_else(|| invalid(key, "must be positive when set")),
        };
        clients.push(ClientConfig {
            token_sha256: digest("clients.token_sha256", &c.token_sha256)?,
            models: c.models.map(|m| m.into_iter().map(|s| s.trim().to_owned()).collect()),
            requests_per_minute: positive("clients.requests_per_minute", c.requests_per_minute)?,
            max_concurrent_jobs: positive("clients.max_concurrent_jobs", c.max_concurrent_jobs)?,
            budget,
            id,
        });
    }
    let admin_token_sha256 = match server.admin_token_sha256.trim() {
        "" => None,
        hex_digest => Some(digest("server.admin_token_sha256", hex_digest)?),
    };
    let settings =
        ClientSettings { auth, clients, legacy_tokens: client_tokens(&server.api_keys)?, admin_token_sha256 };
    if auth == AuthMode::None && settings.has_keys() {
        return Err(invalid(
            "server.auth",
            "is \"none\" (open) but client keys are configured; set it to \"keys\" to check them",
        ));
    }
    Ok(settings)
}

fn coordination_settings(raw: &RawCoordination) -> Result<Option<CoordinationSettings>, ConfigError> {
    match raw.backend.trim() {
        "memory" => return Ok(None),
        "redis" => {}
        other => {
            return Err(invalid("coordination.backend", format!("`{other}` is not \"memory\" or \"redis\"")));
        }
    }
    let url = raw.redis_url.trim();
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(invalid(
            "coordination.redis_url",
            "must be a redis:// or rediss:// URL when backend is \"redis\"",
        ));
    }
    if !(2..=600).contains(&raw.lease_secs) {
        return Err(invalid("coordination.lease_secs", "must be 2 to 600"));
    }
    if !(raw.degraded_share > 0.0 && raw.degraded_share <= 1.0) {
        return Err(invalid("coordination.degraded_share", "must be above 0 and at most 1"));
    }
    Ok(Some(CoordinationSettings {
        redis_url: url.to_owned(),
        lease: Duration::from_secs(raw.lease_secs),
        degraded_share: raw.degraded_share,
    }))
}

fn telemetry_settings(raw: &RawTelemetry) -> Result<TelemetrySettings, ConfigError> {
    let log_format = match raw.log_format.trim() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(invalid("telemetry.log_format", format!("`{other}` is not \"text\" or \"json\"")));
        }
    };
    let otlp_endpoint = match raw.otlp_endpoint.trim() {
        "" => None,
        endpoint => {
            let url = Url::parse(endpoint).map_err(|e| invalid("telemetry.otlp_endpoint", e.to_string()))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid("telemetry.otlp_endpoint", "must be an http(s) URL"));
            }
            Some(endpoint.to_owned())
        }
    };
    Ok(TelemetrySettings { log_format, otlp_endpoint })
}

fn bfl_settings(raw: &RawUpstream) -> Result<BflSettings, ConfigError> {
    let allow = AllowList::new(&raw.allowed_hosts, raw.allow_http)
        .map_err(|reason| invalid("upstream.allowed_hosts", reason))?;
    let base_url = Url::parse(raw.base_url.trim_end_matches('/'))
        .map_err(|e| invalid("upstream.base_url", e.to_string()))?;
    if !allow.permits(&base_url) {
        return Err(invalid(
            "upstream.base_url",
            format!("{base_url} is not on upstream.allowed_hosts (or is http without upstream.allow_http)"),
        ));
    }
    if raw.request_timeout_ms == 0 {
        return Err(invalid("upstream.request_timeout_ms", "must be positive"));
    }
    Ok(BflSettings {
        base_url,
        allow,
        connect_timeout: Duration::from_millis(raw.connect_timeout_ms),
        request_timeout: Duration::from_millis(raw.request_timeout_ms),
        max_idle_connections: raw.max_idle_connections,
    })
}

fn delivery_settings(raw: &RawUpstream, delivery: &RawDelivery) -> Result<DeliverySettings, ConfigError> {
    if !(1..=300).contains(&delivery.keepalive_secs) {
        return Err(invalid("delivery.keepalive_secs", "must be 1 to 300"));
    }
    if raw.max_result_bytes == 0 {
        return Err(invalid("upstream.max_result_bytes", "must be positive"));
    }
    if raw.max_b64_inflight_bytes < 1024 {
        return Err(invalid("upstream.max_b64_inflight_bytes", "must be at least 1024"));
    }
    let d = delivery;
    let given = |text: &str| Some(text.trim().to_owned()).filter(|t| !t.is_empty());
    let store = match d.store.trim() {
        "none" => StoreChoice::None,
        "local" => StoreChoice::Local {
            dir: given(&d.local_dir)
                .ok_or_else(|| invalid("delivery.local_dir", "required when delivery.store is \"local\""))?
                .into(),
        },
        "s3" => StoreChoice::S3(S3Settings {
            bucket: given(&d.s3_bucket)
                .ok_or_else(|| invalid("delivery.s3_bucket", "required when delivery.store is \"s3\""))?,
            region: given(&d.s3_region),
            endpoint: given(&d.s3_endpoint),
            path_style: d.s3_path_style,
            prefix: d.s3_prefix.trim().trim_matches('/').to_owned(),
            access_key_id: given(&d.s3_access_key_id),
            secret_access_key: given(d.s3_secret_access_key.expose_secret()).map(SecretString::from),
        }),
        other => {
            return Err(invalid("delivery.store", format!("`{other}` is not \"none\", \"local\" or \"s3\"")));
        }
    };
    let public_base_url = given(&d.public_base_url)
        .map(|u| http_url("delivery.public_base_url", &u).map(|u| format!("{}/", u.trim_end_matches('/'))))
        .transpose()?;
    let link_base_url = given(&d.link_base_url)
        .map(|u| http_url("delivery.link_base_url", &u).map(|u| u.trim_end_matches('/').to_owned()))
        .transpose()?;
    let signing_key = given(d.signing_key.expose_secret()).map(SecretString::from);
    let rehosting = !matches!(store, StoreChoice::None);
    match &signing_key {
        None if rehosting && public_base_url.is_none() => {
            return Err(invalid(
                "delivery.signing_key",
                "required when delivery.store is set (it signs the links to re-hosted images); \
                 e.g. `openssl rand -hex 32`",
            ));
        }
        Some(key) if key.expose_secret().len() < 16 => {
            return Err(invalid("delivery.signing_key", "must be at least 16 characters"));
        }
        Some(_) | None => {}
    }
    const YEAR: u64 = 365 * 86_400;
    if !(1..=YEAR).contains(&d.link_ttl_secs) {
        return Err(invalid("delivery.link_ttl_secs", "must be 1 s to 365 days"));
    }
    if d.retention_secs < d.link_ttl_secs || d.retention_secs > 10 * YEAR {
        return Err(invalid(
            "delivery.retention_secs",
            "must be at least delivery.link_ttl_secs (a link may not outlive its image) and at most 10 years",
        ));
    }
    at_most_a_day("delivery.store_timeout_ms", d.store_timeout_ms / 1000)?;
    if d.store_timeout_ms == 0 {
        return Err(invalid("delivery.store_timeout_ms", "must be positive"));
    }
    let cors_origins: Vec<String> = d.cors_origins.iter().map(|o| o.trim().to_owned()).collect();
    if cors_origins.iter().any(String::is_empty) {
        return Err(invalid("delivery.cors_origins", "an entry is blank"));
    }
    Ok(DeliverySettings {
        max_result_bytes: raw.max_result_bytes,
        max_b64_inflight_bytes: raw.max_b64_inflight_bytes,
        keepalive: Duration::from_secs(delivery.keepalive_secs),
        store,
        store_timeout: Duration::from_millis(d.store_timeout_ms),
        retention: Duration::from_secs(d.retention_secs),
        public_base_url,
        link_base_url,
        signing_key,
        link_ttl: Duration::from_secs(d.link_ttl_secs),
        cors_origins,
    })
}

/// An absolute http(s) URL with no query or fragment, as written (trailing `/` trimmed by the caller).
fn http_url(key: &'static str, text: &str) -> Result<String, ConfigError> {
    let url = Url::parse(text).map_err(|e| invalid(key, format!("`{text}`: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(key, format!("`{text}` is not an http(s) URL")));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(key, format!("`{text}` may not have a query or fragment")));
    }
    Ok(text.to_owned())
}

fn dispatch_settings(raw: &RawUpstream) -> Result<DispatchSettings, ConfigError> {
    at_most_a_day("upstream.max_task_lifetime_secs", raw.max_task_lifetime_secs)?;
    at_most_a_day("upstream.poll_interval_ms", raw.poll_interval_ms / 1000)?;
    at_most_a_day("upstream.poll_timeout_ms", raw.poll_timeout_ms / 1000)?;
    at_most_a_day("upstream.not_found_grace_ms", raw.not_found_grace_ms / 1000)?;
    at_most_a_day("upstream.retry_base_ms", raw.retry_base_ms / 1000)?;
    if raw.poll_interval_ms == 0 || raw.poll_timeout_ms == 0 {
        return Err(invalid("upstream", "poll_interval_ms and poll_timeout_ms must be positive"));
    }
    let scale = raw.first_poll_scale;
    if !(scale.is_finite() && scale > 0.0 && scale <= 10.0) {
        return Err(invalid("upstream.first_poll_scale", "must be above 0 and at most 10"));
    }
    if raw.max_task_lifetime_secs == 0 {
        return Err(invalid("upstream.max_task_lifetime_secs", "must be positive"));
    }
    let poll_schedule = PollSchedule::parse(raw.poll_schedule.trim())
        .ok_or_else(|| invalid("upstream.poll_schedule", "must be \"learning\" or \"fixed\""))?;
    Ok(DispatchSettings {
        submit_retries: raw.submit_retries,
        retry_base: Duration::from_millis(raw.retry_base_ms),
        poll_interval: Duration::from_millis(raw.poll_interval_ms),
        poll_schedule,
        poll_timeout: Duration::from_millis(raw.poll_timeout_ms),
        not_found_grace: Duration::from_millis(raw.not_found_grace_ms),
        first_poll_scale: scale,
        max_task_lifetime: Duration::from_secs(raw.max_task_lifetime_secs),
        bfl_webhooks: bfl_webhook_settings(raw)?,
    })
}

/// BFL webhooks in: on when `upstream.webhook_base_url` is set.
fn bfl_webhook_settings(raw: &RawUpstream) -> Result<Option<BflWebhookSettings>, ConfigError> {
    use secrecy::ExposeSecret;
    let base = raw.webhook_base_url.trim();
    if base.is_empty() {
        return Ok(None);
    }
    at_most_a_day("upstream.webhook_poll_interval_ms", raw.webhook_poll_interval_ms / 1000)?;
    if raw.webhook_poll_interval_ms == 0 {
        return Err(invalid("upstream.webhook_poll_interval_ms", "must be positive"));
    }
    let base_url = Url::parse(base.trim_end_matches('/'))
        .map_err(|e| invalid("upstream.webhook_base_url", e.to_string()))?;
    if !matches!(base_url.scheme(), "https" | "http")
        || base_url.host_str().is_none()
        || base_url.query().is_some()
        || base_url.fragment().is_some()
    {
        return Err(invalid(
            "upstream.webhook_base_url",
            "must be the gateway's public http(s) URL, without query or fragment",
        ));
    }
    let secret = match raw.webhook_secret.expose_secret().trim() {
        // Random per process: 244 bits from the OS generator (two v4 UUIDs). Jobs of another
        // process (or before a restart) cannot be called back into this one anyway.
        "" => {
            SecretString::from(format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()))
        }
        text if text.len() < 16 => {
            return Err(invalid(
                "upstream.webhook_secret",
                "must be at least 16 characters (or empty: random)",
            ));
        }
        text => SecretString::from(text.to_owned()),
    };
    Ok(Some(BflWebhookSettings {
        base_url,
        secret,
        poll_interval: Duration::from_millis(raw.webhook_poll_interval_ms),
    }))
}

fn capacity_settings(raw: &RawUpstream) -> Result<CapacitySettings, ConfigError> {
    at_most_a_day("upstream.queue_wait_ms", raw.queue_wait_ms / 1000)?;
    at_most_a_day("upstream.credit_cooldown_secs", raw.credit_cooldown_secs)?;
    let mut keys = split_keys(&raw.keys);
    if keys.is_empty()
        && let Ok(env_key) = std::env::var("BFL_API_KEY")
    {
        keys = split_keys(&[env_key]);
    }
    if raw.queue_max == 0 {
        return Err(invalid("upstream.queue_max", "must be at least 1 (every job passes through the queue)"));
    }
    Ok(CapacitySettings {
        keys: budgets(keys, raw)?,
        queue_max: raw.queue_max,
        queue_wait: Duration::from_millis(raw.queue_wait_ms),
        credit_cooldown: Duration::from_secs(raw.credit_cooldown_secs),
    })
}

fn upload_settings(raw: &RawUploads) -> Result<UploadSettings, ConfigError> {
    if raw.max_file_bytes == 0 || raw.max_parts == 0 || raw.max_json_bytes < 1024 {
        return Err(invalid(
            "uploads",
            "max_file_bytes and max_parts must be positive, max_json_bytes at least 1024",
        ));
    }
    if raw.max_request_bytes < raw.max_file_bytes {
        return Err(invalid("uploads.max_request_bytes", "must be at least uploads.max_file_bytes"));
    }
    if raw.max_spool_bytes < raw.max_file_bytes {
        return Err(invalid(
            "uploads.max_spool_bytes",
            "must be at least uploads.max_file_bytes (a largest reference must fit)",
        ));
    }
    if raw.max_json_inflight_bytes < raw.max_json_bytes as u64 {
        return Err(invalid(
            "uploads.max_json_inflight_bytes",
            "must be at least uploads.max_json_bytes (a largest JSON body must fit)",
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
        max_request_bytes: raw.max_request_bytes,
        max_spool_bytes: raw.max_spool_bytes,
        max_json_inflight_bytes: raw.max_json_inflight_bytes,
    })
}

fn job_rules(raw: &RawJobs, delivery: &RawDelivery) -> Result<JobRules, ConfigError> {
    if !(1..=100).contains(&raw.max_n) {
        return Err(invalid("jobs.max_n", "must be 1 to 100"));
    }
    let default_response_format = match delivery.default_response_format.trim() {
        "url" => ResponseFormat::Url,
        "b64_json" => ResponseFormat::B64Json,
        _ => return Err(invalid("delivery.default_response_format", "must be \"url\" or \"b64_json\"")),
    };
    Ok(JobRules { max_n: raw.max_n, default_response_format })
}

fn batch_settings(raw: &RawJobs) -> Result<BatchSettings, ConfigError> {
    at_most_a_day("jobs.idempotency_ttl_secs", raw.idempotency_ttl_secs)?;
    Ok(BatchSettings {
        result_ttl: Duration::from_secs(raw.result_ttl_secs),
        idempotency_ttl: Duration::from_secs(raw.idempotency_ttl_secs),
        max_entries: raw.max_records,
    })
}

fn store_settings(raw: &RawJobs) -> Result<StoreSettings, ConfigError> {
    at_most_a_day("jobs.result_ttl_secs", raw.result_ttl_secs)?;
    if raw.max_records == 0 {
        return Err(invalid("jobs.max_records", "must be positive"));
    }
    Ok(StoreSettings { result_ttl: Duration::from_secs(raw.result_ttl_secs), max_records: raw.max_records })
}

fn webhook_settings(raw: &RawJobs) -> Result<WebhookSettings, ConfigError> {
    use secrecy::ExposeSecret;
    at_most_a_day("jobs.webhook_retry_base_ms", raw.webhook_retry_base_ms / 1000)?;
    at_most_a_day("jobs.webhook_timeout_ms", raw.webhook_timeout_ms / 1000)?;
    let secret = match raw.webhook_secret.expose_secret().trim() {
        "" => None,
        text => Some(WebhookSecret::parse(text).map_err(|reason| invalid("jobs.webhook_secret", reason))?),
    };
    if !(1..=20).contains(&raw.webhook_max_attempts) {
        return Err(invalid("jobs.webhook_max_attempts", "must be 1 to 20"));
    }
    if raw.webhook_max_pending == 0 || raw.webhook_timeout_ms == 0 || raw.webhook_retry_base_ms == 0 {
        return Err(invalid(
            "jobs",
            "webhook_max_pending, webhook_timeout_ms and webhook_retry_base_ms must be positive",
        ));
    }
    let allowed_hosts = raw
        .webhook_allowed_hosts
        .iter()
        .flat_map(|h| h.split(','))
        .map(|h| {
            h.trim().trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase()
        })
        .filter(|h| !h.is_empty())
        .collect::<Vec<_>>();
    // An IPv6 address has colons; anything else with a scheme, port, path or wildcard is a mistake.
    let malformed = |h: &String| h.parse::<std::net::IpAddr>().is_err() && h.contains([':', '/', '@', '*']);
    if let Some(bad) = allowed_hosts.iter().find(|h| malformed(h)) {
        return Err(invalid(
            "jobs.webhook_allowed_hosts",
            format!("`{bad}` is not a host name or IP address (no scheme, port or wildcard)"),
        ));
    }
    Ok(WebhookSettings {
        secret,
        allowed_hosts,
        retry_base: Duration::from_millis(raw.webhook_retry_base_ms),
        max_attempts: raw.webhook_max_attempts,
        max_pending: raw.webhook_max_pending,
        attempt_timeout: Duration::from_millis(raw.webhook_timeout_ms),
    })
}

/// Pairs each key with its name and budget: `key_names[i]` (else a short hash of the key) and
/// `key_caps[i]` ("TASKS" or "TASKS/KONTEXT_MAX", else the defaults).
fn budgets(keys: Vec<SecretString>, raw: &RawUpstream) -> Result<Vec<KeyBudget>, ConfigError> {
    if raw.task_cap == 0 {
        return Err(invalid("upstream.task_cap", "must be positive"));
    }
    if raw.key_caps.len() > keys.len() {
        return Err(invalid("upstream.key_caps", "more entries than upstream.keys"));
    }
    if raw.key_names.len() > keys.len() {
        return Err(invalid("upstream.key_names", "more entries than upstream.keys"));
    }
    let budgets = keys
        .into_iter()
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
            let id = match raw.key_names.get(i).map(|n| n.trim()) {
                Some(name) if !name.is_empty() => KeyId::named(name),
                Some(_) => return Err(invalid("upstream.key_names", "a key name is blank")),
                None => KeyId::of(&key),
            };
            Ok(KeyBudget { id, key, tasks, kontext_max: kontext_max.min(tasks) })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let mut ids: Vec<&KeyId> = budgets.iter().map(|b| &b.id).collect();
    ids.sort();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return Err(invalid(
            "upstream.keys",
            "two keys have the same name (or the same key is listed twice)",
        ));
    }
    Ok(budgets)
}

/// Client tokens, as a list or as one comma-separated string (how the environment gives them). A
/// blank entry stops start-up: dropped, it could leave the list empty, and an empty list means
/// no client authentication at all (`FLUXGATE__SERVER__API_KEYS=" , "` would open the gateway).
fn client_tokens(values: &[String]) -> Result<Vec<SecretString>, ConfigError> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(|token| match token.trim() {
            "" => Err(invalid(
                "server.api_keys",
                "an entry is blank (leave the list empty, not blank, to turn client authentication off)",
            )),
            token => Ok(SecretString::from(token.to_owned())),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn load_toml(text: &str) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("fluxgate.toml");
        std::fs::write(&path, text).expect("write config");
        Settings::load(Sources { file: Some(&path), ..Sources::default() })
    }

    #[test]
    fn a_list_given_as_one_number_in_the_environment_is_a_list() {
        let settings = Settings::load(Sources {
            overrides: vec![("upstream.keys", "k1".into()), ("upstream.key_caps", 48.into())],
            ..Sources::default()
        })
        .expect("a single numeric cap is a list of one");
        assert_eq!(settings.capacity.keys[0].tasks, 48);
    }

    #[test]
    fn the_defaults_load() {
        let settings = Settings::load(Sources::default()).expect("defaults are valid");
        assert_eq!(settings.server.listen.port(), 8080);
        assert_eq!(settings.jobs.result_ttl, Duration::from_secs(3600));
    }

    #[test]
    fn the_poll_schedule_learns_by_default_and_fixed_can_be_chosen() {
        let settings = Settings::load(Sources::default()).expect("defaults are valid");
        assert_eq!(settings.dispatch.poll_schedule, PollSchedule::Learning);
        let fixed = load_toml("[upstream]\npoll_schedule = \"fixed\"\n").expect("fixed is valid");
        assert_eq!(fixed.dispatch.poll_schedule, PollSchedule::Fixed);
        let err = load_toml("[upstream]\npoll_schedule = \"eager\"\n").expect_err("an unknown schedule");
        assert!(err.to_string().contains("upstream.poll_schedule"), "{err}");
    }

    #[test]
    fn an_unknown_key_in_a_file_stops_start_up_naming_it() {
        let err = load_toml("[server]\nlistn = \"127.0.0.1:1\"\n").expect_err("a typo is refused");
        assert!(err.to_string().contains("server.listn"), "{err}");
        let err = load_toml("[servr]\nlisten = \"127.0.0.1:1\"\n").expect_err("a typo is refused");
        assert!(err.to_string().contains("servr.listen"), "{err}");
        assert!(load_toml("[models.\"flux-dev\"]\ndeadline_secs = 9\n").is_ok());
        assert!(load_toml("[jobs]\n# result_ttl_secs = 60\n").is_ok(), "an empty known section is fine");
        assert!(load_toml("[models.\"flux-dev\"]\ndeadline = 9\n").is_err());
    }

    fn api_keys(value: config::Value) -> Result<Settings, ConfigError> {
        Settings::load(Sources { overrides: vec![("server.api_keys", value)], ..Sources::default() })
    }

    #[test]
    fn a_blank_client_token_stops_start_up_naming_server_api_keys() {
        let list =
            |items: &[&str]| config::Value::from(items.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        for bad in
            [list(&[" , "]), list(&[""]), list(&["a", " "]), list(&["a,,b"]), list(&["a,"]), list(&[",a"])]
        {
            let err = api_keys(bad).expect_err("a blank entry is refused");
            let text = err.to_string();
            assert!(text.contains("server.api_keys") && !text.contains('\n'), "{text}");
        }
        let tokens = |s: &Settings| {
            s.clients.legacy_tokens.iter().map(|k| k.expose_secret().to_owned()).collect::<Vec<_>>()
        };
        let one_string = api_keys(list(&["a, b"])).expect("a comma-separated string");
        assert_eq!(tokens(&one_string), ["a", "b"]);
        let two_items = api_keys(list(&["a", "b"])).expect("a list");
        assert_eq!(tokens(&two_items), ["a", "b"]);
        let empty = api_keys(list(&[])).expect("an empty list means open");
        assert!(empty.clients.legacy_tokens.is_empty());
    }

    #[test]
    fn keys_get_stable_ids_from_names_or_hashes_and_duplicates_are_refused() {
        let settings = Settings::load(Sources {
            overrides: vec![
                ("upstream.keys", vec!["a".to_owned(), "b".to_owned()].into()),
                ("upstream.key_names", vec!["primary".to_owned()].into()),
            ],
            ..Sources::default()
        })
        .expect("valid");
        let ids: Vec<String> = settings.capacity.keys.iter().map(|k| k.id.to_string()).collect();
        assert_eq!(ids[0], "primary");
        assert!(ids[1].starts_with("key-"));
        let twice = Settings::load(Sources {
            overrides: vec![("upstream.keys", vec!["a".to_owned(), "a".to_owned()].into())],
            ..Sources::default()
        });
        assert!(twice.is_err());
    }

    #[test]
    fn webhook_settings_are_checked_and_secrets_are_not_printed() {
        let load = |pairs: Vec<(&'static str, config::Value)>| {
            Settings::load(Sources { overrides: pairs, ..Sources::default() })
        };
        let off = load(Vec::new()).expect("defaults");
        assert!(off.webhooks.secret.is_none() && off.dispatch.bfl_webhooks.is_none());
        let err = load(vec![("jobs.webhook_secret", "not-whsec".into())]).expect_err("a bad secret");
        assert!(err.to_string().contains("jobs.webhook_secret"), "{err}");
        let err = load(vec![("jobs.webhook_allowed_hosts", vec!["https://x".to_owned()].into())])
            .expect_err("a URL");
        assert!(err.to_string().contains("jobs.webhook_allowed_hosts"), "{err}");
        let on = load(vec![
            ("jobs.webhook_secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
            ("jobs.webhook_allowed_hosts", "Hooks.Internal,[::1]".into()),
            ("upstream.webhook_base_url", "https://gw.example.com/".into()),
            ("upstream.webhook_secret", "a-long-enough-secret".into()),
        ])
        .expect("valid");
        assert_eq!(on.webhooks.allowed_hosts, ["hooks.internal", "::1"]);
        let bfl = on.dispatch.bfl_webhooks.as_ref().expect("on");
        assert_eq!(bfl.secret.expose_secret(), "a-long-enough-secret");
        let printed = format!("{on:?}");
        assert!(
            !printed.contains("a-long-enough-secret") && !printed.contains("MfKQ9r8"),
            "secrets leak into Debug"
        );
        let err = load(vec![("upstream.webhook_base_url", "ftp://x".into())]).expect_err("not http(s)");
        assert!(err.to_string().contains("upstream.webhook_base_url"), "{err}");
        let random =
            load(vec![("upstream.webhook_base_url", "https://gw.example.com".into())]).expect("valid");
        assert!(random.dispatch.bfl_webhooks.expect("on").secret.expose_secret().len() >= 32);
        // Replicas sharing Redis must share the secret: a webhook may reach any of them.
        let shared = |secret: &str| {
            load(vec![
                ("coordination.backend", "redis".into()),
                ("upstream.webhook_base_url", "https://gw.example.com".into()),
                ("upstream.webhook_secret", secret.into()),
            ])
        };
        let err = shared("").expect_err("no shared secret");
        assert!(err.to_string().contains("upstream.webhook_secret"), "{err}");
        assert!(shared("a-long-enough-secret").is_ok());
    }

    fn delivery(pairs: Vec<(&'static str, config::Value)>) -> Result<Settings, ConfigError> {
        Settings::load(Sources { overrides: pairs, ..Sources::default() })
    }

    #[test]
    fn a_store_needs_a_signing_key_and_start_up_names_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let local = |extra: Vec<(&'static str, config::Value)>| {
            let mut pairs = vec![
                ("delivery.store", "local".into()),
                ("delivery.local_dir", dir.path().to_string_lossy().into_owned().into()),
            ];
            pairs.extend(extra);
            delivery(pairs)
        };
        let err = local(vec![]).expect_err("no key");
        assert!(err.to_string().contains("delivery.signing_key"), "{err}");
        let err = local(vec![("delivery.signing_key", "short".into())]).expect_err("too short");
        assert!(err.to_string().contains("delivery.signing_key"), "{err}");
        let ok = local(vec![("delivery.signing_key", "0123456789abcdef".into())]).expect("a key");
        assert!(matches!(ok.delivery.store, StoreChoice::Local { .. }));
        assert!(!format!("{:?}", ok.delivery).contains("0123456789abcdef"), "the key is never printed");
        // A key of digits arrives from the environment as a number: still a key.
        local(vec![("delivery.signing_key", 1234567890123456_i64.into())]).expect("digits");
        // With a public base URL the gateway signs nothing.
        local(vec![("delivery.public_base_url", "https://cdn.example/img".into())]).expect("no key needed");
    }

    #[test]
    fn delivery_settings_are_checked_and_name_their_key() {
        let key = ("delivery.signing_key", config::Value::from("0123456789abcdef"));
        for (pairs, named) in [
            (vec![("delivery.store", "ftp".into())], "delivery.store"),
            (vec![("delivery.store", "local".into()), key.clone()], "delivery.local_dir"),
            (vec![("delivery.store", "s3".into()), key.clone()], "delivery.s3_bucket"),
            (vec![("delivery.link_ttl_secs", 0.into())], "delivery.link_ttl_secs"),
            (
                vec![("delivery.link_ttl_secs", 7200.into()), ("delivery.retention_secs", 3600.into())],
                "delivery.retention_secs",
            ),
            (vec![("delivery.public_base_url", "ftp://x".into())], "delivery.public_base_url"),
            (vec![("delivery.link_base_url", "https://x/?a=1".into())], "delivery.link_base_url"),
            (vec![("delivery.cors_origins", vec![" ".to_owned()].into())], "delivery.cors_origins"),
        ] {
            let err = delivery(pairs).expect_err(named);
            assert!(err.to_string().contains(named), "{named}: {err}");
        }
        let s3 = delivery(vec![
            ("delivery.store", "s3".into()),
            ("delivery.s3_bucket", "b".into()),
            ("delivery.s3_prefix", "/images/".into()),
            key,
        ])
        .expect("valid");
        let StoreChoice::S3(s3) = s3.delivery.store else { panic!("s3") };
        assert_eq!((s3.prefix.as_str(), s3.region, s3.endpoint), ("images", None, None));
        let defaults = delivery(vec![]).expect("defaults");
        assert!(matches!(defaults.delivery.store, StoreChoice::None));
        assert_eq!(defaults.delivery.cors_origins, ["*"]);
        assert_eq!(defaults.delivery.link_ttl, Duration::from_secs(86_400));
    }
}
