//! The DNS resolver of webhook deliveries: a name that resolves to any private, loopback or
//! link-local address is refused (unless its host is allow-listed), and the connection goes to
//! exactly the addresses checked here, so a name cannot pass the check and then rebind.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::target::{forbidden, host_text};

/// Most addresses one name may resolve to (a bound on what one lookup can hand us).
const MAX_ADDRS: usize = 32;

pub(super) struct GuardedResolver {
    pub(super) allowed_hosts: Arc<[String]>,
}

#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("{0} resolves to a private, loopback or reserved address")]
    Private(String),
    #[error("{0} resolves to no address")]
    Nothing(String),
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = host_text(name.as_str());
        let listed = self.allowed_hosts.contains(&host);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.take(MAX_ADDRS).collect();
            if addrs.is_empty() {
                return Err(Box::new(Refused::Nothing(host)) as _);
            }
            if !listed && addrs.iter().any(|a| forbidden(a.ip())) {
                return Err(Box::new(Refused::Private(host)) as _);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    async fn resolve(allowed: &[&str], name: &str) -> Result<Vec<SocketAddr>, String> {
        let resolver = GuardedResolver {
            allowed_hosts: allowed.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>().into(),
        };
        let name = Name::from_str(name).expect("a valid name");
        resolver.resolve(name).await.map(|addrs| addrs.collect()).map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_unless_listed() {
        let refused = resolve(&[], "localhost").await.expect_err("loopback is refused");
        assert!(refused.contains("private, loopback"), "{refused}");
        let addrs = resolve(&["localhost"], "localhost").await.expect("a listed host resolves");
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    }
}
