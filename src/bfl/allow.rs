//! The host allow-list: the only origins (scheme, host and port) that ever receive a BFL key or
//! are downloaded from.

use reqwest::Url;

#[derive(Debug, Clone)]
pub struct AllowList {
    patterns: Vec<Pattern>,
    allow_http: bool,
}

/// One entry: a host (or a `*.domain`) and the port it may be reached on.
#[derive(Debug, Clone, PartialEq)]
struct Pattern {
    host: HostPattern,
    /// `None`: only the scheme's default port (443 for https, 80 for http). A key sent to another
    /// port of an allowed host would reach whatever else listens there.
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq)]
enum HostPattern {
    /// `*.bfl.ai`: the domain itself and any subdomain.
    Suffix(String),
    Exact(String),
}

impl AllowList {
    pub fn new(patterns: &[String], allow_http: bool) -> Result<AllowList, String> {
        let patterns = patterns
            .iter()
            .flat_map(|p| p.split(','))
            .map(|p| p.trim().to_ascii_lowercase())
            .filter(|p| !p.is_empty())
            .map(|p| Pattern::parse(&p))
            .collect::<Result<Vec<_>, _>>()?;
        if patterns.is_empty() {
            return Err("the list is empty, so no upstream host could be reached".to_owned());
        }
        Ok(AllowList { patterns, allow_http })
    }

    /// True when `url` may receive the key: an allowed scheme, and a host and port on the list.
    pub fn permits(&self, url: &Url) -> bool {
        let default_port = match url.scheme() {
            "https" => 443,
            "http" if self.allow_http => 80,
            _ => return false,
        };
        let Some(host) = url.host_str() else { return false };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let port = url.port().unwrap_or(default_port);
        url.username().is_empty()
            && url.password().is_none()
            && self.patterns.iter().any(|p| p.port.unwrap_or(default_port) == port && p.host.matches(&host))
    }
}

impl Pattern {
    /// `host`, `host:port`, `*.domain`, `*.domain:port`, `[v6]` or `[v6]:port` (lowercased).
    fn parse(p: &str) -> Result<Pattern, String> {
        let bad = || format!("`{p}` is not a host, `host:port` or a `*.domain[:port]` pattern");
        let (host, port) = if let Some(rest) = p.strip_prefix('[') {
            let (v6, after) = rest.split_once(']').ok_or_else(bad)?;
            match after {
                "" => (v6, None),
                _ => (v6, Some(after.strip_prefix(':').ok_or_else(bad)?)),
            }
        } else if p.matches(':').count() > 1 {
            // A bare IPv6 address: its colons are not a port separator.
            (p, None)
        } else {
            match p.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (p, None),
            }
        };
        let port = match port {
            None => None,
            Some(port) => Some(port.parse::<u16>().ok().filter(|n| *n != 0).ok_or_else(bad)?),
        };
        let valid = |h: &str| !h.is_empty() && !h.contains(['*', '/', '@', '?', '#', ' ']);
        let host = match host.strip_prefix("*.") {
            Some(domain) if valid(domain) => HostPattern::Suffix(domain.to_owned()),
            None if valid(host) => HostPattern::Exact(host.to_owned()),
            _ => return Err(bad()),
        };
        Ok(Pattern { host, port })
    }
}

impl HostPattern {
    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(d) => {
                host == d || host.strip_suffix(d.as_str()).is_some_and(|rest| rest.ends_with('.'))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(patterns: &[&str], http: bool) -> AllowList {
        AllowList::new(&patterns.iter().map(|s| s.to_string()).collect::<Vec<_>>(), http).expect("valid")
    }

    fn url(s: &str) -> Url {
        Url::parse(s).expect("valid url")
    }

    #[test]
    fn a_wildcard_matches_the_domain_and_its_subdomains_only() {
        let allow = list(&["*.bfl.ai"], false);
        assert!(allow.permits(&url("https://api.bfl.ai/v1/flux-2-pro")));
        assert!(allow.permits(&url("https://delivery-eu.bfl.ai/x")));
        assert!(allow.permits(&url("https://bfl.ai/")));
        assert!(!allow.permits(&url("https://evilbfl.ai/")));
        assert!(!allow.permits(&url("https://api.bfl.ai.evil.com/")));
        assert!(!allow.permits(&url("https://user@api.bfl.ai/")));
    }

    #[test]
    fn plain_http_needs_allow_http() {
        assert!(!list(&["127.0.0.1:9"], false).permits(&url("http://127.0.0.1:9/")));
        assert!(list(&["127.0.0.1:9"], true).permits(&url("http://127.0.0.1:9/")));
        assert!(!list(&["127.0.0.1"], true).permits(&url("ftp://127.0.0.1/")));
    }

    #[test]
    fn malformed_patterns_and_empty_lists_are_refused() {
        assert!(AllowList::new(&["*".into()], false).is_err());
        assert!(AllowList::new(&["a.*.com".into()], false).is_err());
        assert!(AllowList::new(&[" ".into()], false).is_err());
        assert!(AllowList::new(&["host:".into()], false).is_err());
        assert!(AllowList::new(&["host:0".into()], false).is_err());
        assert!(AllowList::new(&["host:99999".into()], false).is_err());
        assert!(AllowList::new(&["host:https".into()], false).is_err());
        assert!(AllowList::new(&["[::1".into()], false).is_err());
        assert!(AllowList::new(&["user@host".into()], false).is_err());
    }

    #[test]
    fn a_pattern_without_a_port_allows_only_the_schemes_default_port() {
        let allow = list(&["*.bfl.ai", "127.0.0.1"], true);
        assert!(allow.permits(&url("https://api.bfl.ai/v1")));
        assert!(allow.permits(&url("https://api.bfl.ai:443/v1")));
        assert!(!allow.permits(&url("https://api.bfl.ai:8443/v1")));
        assert!(!allow.permits(&url("https://api.bfl.ai:80/v1")));
        assert!(allow.permits(&url("http://127.0.0.1/")));
        assert!(allow.permits(&url("http://127.0.0.1:80/")));
        assert!(!allow.permits(&url("http://127.0.0.1:8080/")));
        assert!(!allow.permits(&url("http://127.0.0.1:443/")));
    }

    #[test]
    fn a_pattern_with_a_port_allows_that_port_only() {
        let allow = list(&["127.0.0.1:8080", "*.bfl.ai:8443", "[::1]:9000", "localhost:443"], true);
        assert!(allow.permits(&url("http://127.0.0.1:8080/x")));
        assert!(!allow.permits(&url("http://127.0.0.1/x")));
        assert!(!allow.permits(&url("http://127.0.0.1:8081/x")));
        assert!(allow.permits(&url("https://eu.api.bfl.ai:8443/")));
        assert!(!allow.permits(&url("https://eu.api.bfl.ai/")));
        assert!(allow.permits(&url("http://[::1]:9000/")));
        assert!(!allow.permits(&url("http://[::1]:9001/")));
        // Naming the default port is the same as naming none, for that scheme.
        assert!(allow.permits(&url("https://localhost/")));
        assert!(!allow.permits(&url("http://localhost/")));
    }

    #[test]
    fn a_host_is_matched_whatever_its_case_and_a_bare_ipv6_address_has_no_port() {
        let allow = list(&["API.BFL.AI", "::1"], true);
        assert!(allow.permits(&url("https://api.bfl.ai/")));
        assert!(allow.permits(&url("http://[::1]/")));
        assert!(!allow.permits(&url("http://[::1]:8080/")));
        assert!(!allow.permits(&url("https://:pw@api.bfl.ai/")));
        assert!(!list(&["x.com"], true).permits(&url("javascript:alert(1)")));
        assert!(!list(&["x.com"], true).permits(&url("file:///etc/passwd")));
        assert!(!list(&["x.com"], true).permits(&url("data:text/plain,x")));
    }
}
