//! Where a webhook may go: https to a public address, or anything to a host the operator listed
//! (`jobs.webhook_allowed_hosts`, which may also use http). Checked twice: the URL when a request
//! names it (`check_target`), and each resolved address when a delivery connects (`guard`), so a
//! name that later resolves to a private address (DNS rebinding) is refused too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use reqwest::Url;

use crate::error::ApiError;

use super::WebhookSettings;

/// Longest webhook URL accepted (BFL's own limit for its webhook_url is 2083).
pub const MAX_URL_LEN: usize = 2048;

/// The request field the errors name.
const PARAM: &str = "webhook_url";

/// Checks a client's `webhook_url`: a 400 naming `webhook_url` unless the gateway can sign
/// webhooks and the URL is https to a public host, or names an allow-listed host.
pub fn check_target(url: &str, settings: &WebhookSettings) -> Result<Url, ApiError> {
    if settings.secret.is_none() {
        return Err(ApiError::invalid(
            PARAM,
            "webhooks are not configured on this gateway (jobs.webhook_secret is not set)",
        ));
    }
    if url.len() > MAX_URL_LEN {
        return Err(ApiError::invalid(PARAM, format!("webhook_url is longer than {MAX_URL_LEN} characters")));
    }
    let parsed =
        Url::parse(url).map_err(|e| ApiError::invalid(PARAM, format!("webhook_url is not a URL: {e}")))?;
    match refusal(&parsed, settings) {
        None => Ok(parsed),
        Some(reason) => Err(ApiError::invalid(PARAM, format!("webhook_url {reason}"))),
    }
}

/// Why `url` may not receive a webhook, if it may not.
pub(super) fn refusal(url: &Url, settings: &WebhookSettings) -> Option<&'static str> {
    if !url.username().is_empty() || url.password().is_some() {
        return Some("may not carry credentials");
    }
    let Some(host) = url.host_str().map(host_text) else { return Some("has no host") };
    let listed = settings.allows_host(&host);
    match url.scheme() {
        "https" => {}
        "http" if listed => {}
        "http" => return Some("must use https (http only for hosts in jobs.webhook_allowed_hosts)"),
        _ => return Some("must be an https URL"),
    }
    if listed {
        return None;
    }
    // The URL parser has already turned IPv4 spellings such as `0x7f000001` or `127.1` into
    // dotted form for http and https.
    match host.parse::<IpAddr>() {
        Ok(ip) if forbidden(ip) => Some("names a private, loopback or reserved address"),
        Ok(_) => None,
        Err(_) if is_local_name(&host) => Some("names a local host"),
        Err(_) => None,
    }
}

/// A host as the allow-list spells it: lowercase, no trailing dot, IPv6 without brackets.
pub(super) fn host_text(host: &str) -> String {
    host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase()
}

fn is_local_name(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost") || name.ends_with(".local") || !name.contains('.')
}

/// True for every address a webhook must not reach unless its host is listed: loopback, private,
/// link-local, unspecified, multicast, broadcast, shared (CGNAT) and other reserved ranges, and
/// IPv6 addresses that embed such an IPv4 address (mapped, compatible, NAT64).
pub(super) fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, _, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..=127).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0) // IETF protocol assignments
        || (a == 198 && (18..=19).contains(&b)) // benchmarking
        || a >= 240 // reserved
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let segments = ip.segments();
    // NAT64 (64:ff9b::/96) and the deprecated IPv4-compatible form (::a.b.c.d) reach IPv4 hosts.
    let embedded = Ipv4Addr::from(((u32::from(segments[6])) << 16) | u32::from(segments[7]));
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || (segments[..6] == [0; 6] && !ip.is_loopback()) {
        return ip.is_unspecified() || forbidden_v4(embedded);
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (segments[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
        || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::WebhookSettings;

    fn settings(allowed: &[&str]) -> WebhookSettings {
        WebhookSettings::for_tests(allowed)
    }

    fn refused(url: &str, s: &WebhookSettings) -> bool {
        match check_target(url, s) {
            Ok(_) => false,
            Err(ApiError::InvalidRequest { param, .. }) => {
                assert_eq!(param.as_deref(), Some("webhook_url"));
                true
            }
            Err(other) => panic!("{url}: not a 400: {other:?}"),
        }
    }

    #[test]
    fn https_to_a_public_host_is_accepted_and_http_only_when_listed() {
        let s = settings(&["hooks.internal", "127.0.0.1"]);
        assert!(!refused("https://example.com/hook?x=1", &s));
        assert!(!refused("https://93.184.216.34/hook", &s));
        assert!(refused("http://example.com/hook", &s));
        assert!(refused("ftp://example.com/hook", &s));
        assert!(refused("not a url", &s));
        assert!(refused("https://user:pw@example.com/hook", &s));
        assert!(!refused("http://hooks.internal:8080/hook", &s), "listed hosts may use http");
        assert!(!refused("http://127.0.0.1:9000/hook", &s), "a listed loopback address");
        assert!(refused(&format!("https://example.com/{}", "a".repeat(MAX_URL_LEN)), &s));
    }

    #[test]
    fn private_loopback_link_local_and_local_names_are_refused() {
        let s = settings(&[]);
        for url in [
            "https://127.0.0.1/h",
            "https://127.1/h",
            "https://0x7f000001/h",
            "https://10.1.2.3/h",
            "https://172.16.0.1/h",
            "https://192.168.1.1/h",
            "https://169.254.169.254/latest/meta-data",
            "https://0.0.0.0/h",
            "https://100.64.0.1/h",
            "https://224.0.0.1/h",
            "https://[::1]/h",
            "https://[::]/h",
            "https://[fe80::1]/h",
            "https://[fd00::1]/h",
            "https://[::ffff:127.0.0.1]/h",
            "https://[::ffff:10.0.0.1]/h",
            "https://[64:ff9b::a9fe:a9fe]/h",
            "https://localhost/h",
            "https://LOCALHOST./h",
            "https://api.localhost/h",
            "https://printer.local/h",
            "https://intranet/h",
        ] {
            assert!(refused(url, &s), "{url} must be refused");
        }
        assert!(!refused("https://[2606:4700::1111]/h", &s), "a public IPv6 address");
    }

    #[test]
    fn without_a_secret_no_webhook_url_is_accepted() {
        let s = WebhookSettings { secret: None, ..settings(&[]) };
        assert!(refused("https://example.com/hook", &s));
    }
}
