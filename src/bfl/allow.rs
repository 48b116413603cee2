//! The host allow-list: the only hosts that ever receive a BFL key or are downloaded from.

use reqwest::Url;

#[derive(Debug, Clone)]
pub struct AllowList {
    patterns: Vec<Pattern>,
    allow_http: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Pattern {
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
            .map(|p| match p.strip_prefix("*.") {
                Some(domain) if !domain.is_empty() && !domain.contains('*') => {
                    Ok(Pattern::Suffix(domain.to_owned()))
                }
                None if !p.contains('*') && !p.contains('/') => Ok(Pattern::Exact(p)),
                _ => Err(format!("`{p}` is not a host or a `*.domain` pattern")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if patterns.is_empty() {
            return Err("the list is empty, so no upstream host could be reached".to_owned());
        }
        Ok(AllowList { patterns, allow_http })
    }

    /// True when `url` may receive the key: an allowed scheme and a host on the list.
    pub fn permits(&self, url: &Url) -> bool {
        let scheme_ok = url.scheme() == "https" || (self.allow_http && url.scheme() == "http");
        let Some(host) = url.host_str() else { return false };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        scheme_ok
            && url.username().is_empty()
            && self.patterns.iter().any(|p| match p {
                Pattern::Exact(h) => *h == host,
                Pattern::Suffix(d) => {
                    host == *d || host.strip_suffix(d.as_str()).is_some_and(|rest| rest.ends_with('.'))
                }
            })
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
        assert!(!list(&["127.0.0.1"], false).permits(&url("http://127.0.0.1:9/")));
        assert!(list(&["127.0.0.1"], true).permits(&url("http://127.0.0.1:9/")));
        assert!(!list(&["127.0.0.1"], true).permits(&url("ftp://127.0.0.1/")));
    }

    #[test]
    fn malformed_patterns_and_empty_lists_are_refused() {
        assert!(AllowList::new(&["*".into()], false).is_err());
        assert!(AllowList::new(&["a.*.com".into()], false).is_err());
        assert!(AllowList::new(&[" ".into()], false).is_err());
    }
}
