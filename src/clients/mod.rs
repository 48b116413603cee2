//! Who may call, and how much: client keys (`[[clients]]`: a token's SHA-256, allowed models,
//! requests per minute, concurrent jobs, a budget), the legacy `server.api_keys` (each token a
//! client of its own, without limits), and the admin token of `/v1/usage`. A request's `Caller`
//! scopes its async jobs and idempotency keys and carries its client's limits.
//!
//! Tokens are compared as SHA-256 digests (computed once at start-up for configured ones) in
//! constant time against every client, so neither a token's content nor its length leaks, nor
//! which client it is closest to. The token itself is never stored.

use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use redis::Script;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::coordination::{Hold, Limit, Redis, RedisError, SharedHolds};
use crate::error::ApiError;

/// Whether requests need a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Every API request names a client token (`[[clients]]` or `server.api_keys`).
    Keys,
    /// Open: every request is the anonymous client (`demo`, or set on purpose).
    None,
}

/// The period a budget covers, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Month,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub usd: f64,
    pub period: Period,
}

/// One `[[clients]]` entry.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub id: String,
    pub token_sha256: [u8; 32],
    /// Model ids this client may use; `None`: all.
    pub models: Option<Vec<String>>,
    pub requests_per_minute: Option<NonZeroU32>,
    pub max_concurrent_jobs: Option<NonZeroU32>,
    pub budget: Option<Budget>,
}

#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub auth: AuthMode,
    pub clients: Vec<ClientConfig>,
    /// `server.api_keys`: each token is a client of its own (`key-` and 8 hex digits of its
    /// SHA-256), without limits.
    pub legacy_tokens: Vec<SecretString>,
    /// The SHA-256 of the token `/v1/usage` wants.
    pub admin_token_sha256: Option<[u8; 32]>,
}

impl ClientSettings {
    /// True when some client token is configured.
    pub fn has_keys(&self) -> bool {
        !self.clients.is_empty() || !self.legacy_tokens.is_empty()
    }
}

/// A client and its limits, as the gateway enforces them.
pub struct Client {
    id: Arc<str>,
    /// With Redis, `requests_per_minute` holds across replicas (a sliding minute in Redis).
    shared: Option<Arc<Redis>>,
    /// With Redis, `max_concurrent_jobs` holds across replicas.
    holds: Option<Arc<SharedHolds>>,
    digest: [u8; 32],
    models: Option<HashSet<String>>,
    rate: Option<DefaultDirectRateLimiter>,
    per_minute: Option<u32>,
    concurrency: Option<(Arc<Semaphore>, u32)>,
    budget: Option<Budget>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Client {
    fn new(config: &ClientConfig, shared: Option<(Arc<Redis>, Arc<SharedHolds>)>) -> Client {
        let (shared, holds) = shared.unzip();
        Client {
            id: Arc::from(config.id.as_str()),
            shared,
            holds,
            digest: config.token_sha256,
            models: config.models.as_ref().map(|m| m.iter().cloned().collect()),
            rate: config.requests_per_minute.map(|n| RateLimiter::direct(Quota::per_minute(n))),
            per_minute: config.requests_per_minute.map(NonZeroU32::get),
            concurrency: config
                .max_concurrent_jobs
                .map(|n| (Arc::new(Semaphore::new(n.get() as usize)), n.get())),
            budget: config.budget,
        }
    }

    fn unlimited(id: String, digest: [u8; 32]) -> Client {
        Client {
            id: Arc::from(id),
            shared: None,
            holds: None,
            digest,
            models: None,
            rate: None,
            per_minute: None,
            concurrency: None,
            budget: None,
        }
    }
}

/// The client of a request. Equal callers are the same client.
#[derive(Debug, Clone)]
pub struct Caller(Arc<Client>);

impl PartialEq for Caller {
    fn eq(&self, other: &Caller) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for Caller {}

impl Hash for Caller {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.id.hash(state);
    }
}

/// How long until a limit lets the next request through.
const CONCURRENCY_RETRY: Duration = Duration::from_secs(1);

impl Caller {
    pub fn anonymous() -> Caller {
        Caller(Arc::new(Client::unlimited("anonymous".to_owned(), [0; 32])))
    }

    /// The client's id (`[[clients]]` id, or `key-…` for a legacy token, or `anonymous`).
    pub fn id(&self) -> &str {
        &self.0.id
    }

    pub fn budget(&self) -> Option<Budget> {
        self.0.budget
    }

    /// One more request within the client's `requests_per_minute`, or 429 `rate_limit_exceeded`.
    /// With Redis the minute is shared by every replica (a sliding window in Redis); when Redis
    /// does not answer, each replica counts on its own (governor).
    pub async fn admit_request(&self) -> Result<(), ApiError> {
        let Some(rate) = &self.0.rate else { return Ok(()) };
        let over = |retry_after| ApiError::ClientLimit {
            code: "rate_limit_exceeded",
            message: format!("client `{}` is over its requests per minute", self.0.id),
            retry_after,
            retry_useful: true,
        };
        if let (Some(redis), Some(per_minute)) = (&self.0.shared, self.0.per_minute) {
            match shared_admit(redis, &self.0.id, per_minute).await {
                Ok(None) => return Ok(()),
                Ok(Some(wait)) => return Err(over(wait)),
                Err(e) => tracing::debug!(error = %e, "shared rate limit unavailable; counting here"),
            }
        }
        rate.check().map_err(|not_until| over(not_until.wait_time_from(DefaultClock::default().now())))
    }

    /// 403 `model_not_allowed` unless the client may use `model`.
    pub fn check_model(&self, model: &str) -> Result<(), ApiError> {
        match &self.0.models {
            Some(models) if !models.contains(model) => Err(ApiError::ModelNotAllowed(model.to_owned())),
            Some(_) | None => Ok(()),
        }
    }

    /// Room for `jobs` more jobs within the client's `max_concurrent_jobs`, held until they end;
    /// or 429 `concurrency_limit_exceeded`. With Redis the limit is the cluster's; when Redis
    /// does not answer, this replica's own count decides.
    pub async fn reserve_jobs(&self, jobs: u32) -> Result<Option<JobsHold>, ApiError> {
        let Some((slots, max)) = &self.0.concurrency else { return Ok(None) };
        if jobs > *max {
            return Err(ApiError::invalid(
                "n",
                format!("this client key runs at most {max} images at once; ask for fewer with `n`"),
            ));
        }
        let over = || ApiError::ClientLimit {
            code: "concurrency_limit_exceeded",
            message: format!("client `{}` already runs its limit of {max} concurrent jobs", self.0.id),
            retry_after: CONCURRENCY_RETRY,
            retry_useful: true,
        };
        if let Some(holds) = &self.0.holds {
            let limit =
                Limit { key: format!("fluxgate:jobs:{{{}}}", self.0.id), limit: f64::from(*max), base: None };
            match holds.take(limit, f64::from(jobs)).await {
                Ok(Ok(hold)) => return Ok(Some(JobsHold { _local: None, _shared: Some(hold) })),
                Ok(Err(_)) => return Err(over()),
                Err(e) => tracing::debug!(error = %e, "shared concurrency limit unavailable; counting here"),
            }
        }
        let permit = slots.clone().try_acquire_many_owned(jobs).map_err(|_| over())?;
        Ok(Some(JobsHold { _local: Some(permit), _shared: None }))
    }
}

/// Room among a client's concurrent jobs, held until dropped: in this replica, or in Redis.
pub struct JobsHold {
    _local: Option<OwnedSemaphorePermit>,
    _shared: Option<Hold>,
}

/// Every client the gateway knows, and the admin token.
pub struct Clients {
    auth: AuthMode,
    known: Vec<Arc<Client>>,
    anonymous: Caller,
    admin: Option<[u8; 32]>,
}

impl Clients {
    /// `shared`: Redis, when replicas share client limits.
    pub fn new(settings: &ClientSettings, shared: Option<(Arc<Redis>, Arc<SharedHolds>)>) -> Clients {
        let mut known: Vec<Arc<Client>> =
            settings.clients.iter().map(|c| Arc::new(Client::new(c, shared.clone()))).collect();
        for token in &settings.legacy_tokens {
            let digest: [u8; 32] = Sha256::digest(token.expose_secret().trim().as_bytes()).into();
            known.push(Arc::new(Client::unlimited(format!("key-{}", &hex::encode(digest)[..8]), digest)));
        }
        Clients {
            auth: settings.auth,
            known,
            anonymous: Caller::anonymous(),
            admin: settings.admin_token_sha256,
        }
    }

    pub fn auth(&self) -> AuthMode {
        self.auth
    }

    /// The caller a request's `Authorization: Bearer` names, or 401.
    pub fn identify(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        if self.auth == AuthMode::None {
            return Ok(self.anonymous.clone());
        }
        let presented = bearer_digest(headers).ok_or(ApiError::Unauthorized)?;
        // Every client is compared, whichever matches: the time taken says nothing.
        let (mut found, mut index) = (subtle::Choice::from(0), 0u32);
        for (i, client) in self.known.iter().enumerate() {
            let matched = client.digest.ct_eq(&presented);
            index.conditional_assign(&(i as u32), matched);
            found |= matched;
        }
        if bool::from(found) {
            self.known.get(index as usize).map(|c| Caller(c.clone())).ok_or(ApiError::Unauthorized)
        } else {
            Err(ApiError::Unauthorized)
        }
    }

    pub fn has_admin_token(&self) -> bool {
        self.admin.is_some()
    }

    /// True when the request carries the admin token, or when the gateway is open and has none.
    pub fn is_admin(&self, headers: &HeaderMap) -> bool {
        match (self.admin, bearer_digest(headers)) {
            (Some(admin), Some(presented)) => bool::from(admin.ct_eq(&presented)),
            (Some(_), None) => false,
            (None, _) => self.auth == AuthMode::None,
        }
    }
}

/// Counts a request in the client's sliding minute in Redis: `None` when it fits, else how long
/// until the oldest request of the minute leaves it.
const SLIDING_MINUTE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + 60000 - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], 60000)
return -1
";

async fn shared_admit(redis: &Redis, client: &str, per_minute: u32) -> Result<Option<Duration>, RedisError> {
    let script = Script::new(SLIDING_MINUTE);
    let mut call = script.prepare_invoke();
    call.key(format!("fluxgate:rate:{{{client}}}"))
        .arg(per_minute)
        .arg(uuid::Uuid::new_v4().simple().to_string());
    let wait_ms: i64 = redis.invoke(&call).await?;
    Ok(u64::try_from(wait_ms).ok().map(Duration::from_millis))
}

/// The SHA-256 of the request's bearer token.
fn bearer_digest(headers: &HeaderMap) -> Option<[u8; 32]> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| Sha256::digest(token.trim().as_bytes()).into())
}

/// A fresh client token and the configuration lines that admit it (`fluxgate keys new`).
pub fn new_key(id: &str) -> (String, String) {
    let token = format!("fg-{}", uuid::Uuid::new_v4().simple()) + &uuid::Uuid::new_v4().simple().to_string();
    let digest = hex::encode(Sha256::digest(token.as_bytes()));
    let lines = format!("[[clients]]\nid = \"{id}\"\ntoken_sha256 = \"{digest}\"\n");
    (token, lines)
}

/// A handler behind the authentication middleware always finds its caller; one that is not (a
/// routing mistake) refuses the request rather than treating it as anybody's.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Caller, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or(ApiError::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str, token: &str) -> ClientConfig {
        ClientConfig {
            id: id.into(),
            token_sha256: Sha256::digest(token.as_bytes()).into(),
            models: Some(vec!["flux-2-pro".into()]),
            requests_per_minute: NonZeroU32::new(2),
            max_concurrent_jobs: NonZeroU32::new(3),
            budget: None,
        }
    }

    fn headers(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, format!("Bearer {token}").parse().expect("ascii"));
        h
    }

    #[test]
    fn tokens_find_their_client_and_others_are_refused() {
        let settings = ClientSettings {
            auth: AuthMode::Keys,
            clients: vec![client("a", "tok-a"), client("b", "tok-b")],
            legacy_tokens: vec![SecretString::from("legacy")],
            admin_token_sha256: Some(Sha256::digest(b"admin").into()),
        };
        let clients = Clients::new(&settings, None);
        assert_eq!(clients.identify(&headers("tok-b")).map(|c| c.id().to_owned()), Ok("b".to_owned()));
        assert!(clients.identify(&headers("legacy")).is_ok_and(|c| c.id().starts_with("key-")));
        assert_eq!(clients.identify(&headers("tok-c")).err(), Some(ApiError::Unauthorized));
        assert_eq!(clients.identify(&HeaderMap::new()).err(), Some(ApiError::Unauthorized));
        assert!(clients.is_admin(&headers("admin")) && !clients.is_admin(&headers("tok-a")));
    }

    #[tokio::test]
    async fn limits_refuse_with_their_codes() {
        let caller = Caller(Arc::new(Client::new(&client("a", "t"), None)));
        assert!(caller.check_model("flux-2-pro").is_ok());
        assert_eq!(caller.check_model("flux-dev").err(), Some(ApiError::ModelNotAllowed("flux-dev".into())));
        assert!(caller.admit_request().await.is_ok() && caller.admit_request().await.is_ok());
        assert!(matches!(
            caller.admit_request().await,
            Err(ApiError::ClientLimit { code: "rate_limit_exceeded", .. })
        ));
        let held = caller.reserve_jobs(3).await.expect("room for three");
        assert!(matches!(
            caller.reserve_jobs(1).await,
            Err(ApiError::ClientLimit { code: "concurrency_limit_exceeded", .. })
        ));
        drop(held);
        assert!(caller.reserve_jobs(1).await.is_ok());
    }

    #[test]
    fn a_new_key_is_admitted_by_its_lines() {
        let (token, lines) = new_key("acme");
        assert!(token.len() >= 64);
        assert!(lines.contains(&hex::encode(Sha256::digest(token.as_bytes()))));
    }
}
