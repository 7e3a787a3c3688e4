//! Webhook URLs: the rules a URL must pass to be saved, the address policy among them.

use super::address::{AddressPolicy, Refusal};
use super::shown::shown;
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr};
use url::{Host, Url};

const MAX_URL_LEN: usize = 2048;

/// A URL that passed the webhook rules for the server's mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct WebhookUrl(String);

impl WebhookUrl {
    /// HTTPS only and public hosts only, unless `dev` allows `http://` and private targets.
    pub fn parse(input: &str, dev: bool) -> Result<Self, String> {
        Self::parse_with(input, &AddressPolicy::new(dev, Vec::new()))
    }

    /// As [`parse`](Self::parse), with private hosts the policy allows let through too.
    pub fn parse_with(input: &str, policy: &AddressPolicy) -> Result<Self, String> {
        let dev = policy.is_dev();
        if input.len() > MAX_URL_LEN {
            return Err(format!("URL is longer than {MAX_URL_LEN} characters"));
        }
        let url = Url::parse(input).map_err(|e| format!("invalid URL: {e}"))?;
        // Normalising can lengthen it (percent-encoding, punycode): the limit is on what is stored.
        if url.as_str().len() > MAX_URL_LEN {
            return Err(format!(
                "URL is longer than {MAX_URL_LEN} characters once normalised"
            ));
        }
        match url.scheme() {
            "https" => {}
            "http" if dev => {}
            "http" => {
                return Err("URL must use https (http is allowed only in --dev mode)".to_owned());
            }
            other => {
                return Err(format!(
                    "URL scheme {} is not allowed; use https",
                    shown(other)
                ));
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("URL must not contain a user name or password".to_owned());
        }
        if url.fragment().is_some() {
            return Err("URL must not contain a fragment (#…)".to_owned());
        }
        let host = url.host().ok_or("URL must have a host")?;
        if let Some(refusal) = host_refusal(policy, &host) {
            return Err(format!(
                "URL points to an address that is not globally reachable: {refusal}; allowed only in --dev mode or in delivery.allow_networks"
            ));
        }
        // Port 0 is reserved (RFC 6335 §6): no receiver listens there, in any mode.
        if url.port() == Some(0) {
            return Err("URL port 0 is not allowed".to_owned());
        }
        Ok(Self(url.into()))
    }

    /// Wraps a URL read back from the store.
    pub fn from_trusted(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a delivery may not go to `host`: an IP address the policy refuses, or `localhost`, which
/// names loopback whatever DNS says (RFC 6761 §6.3). Other names are checked after DNS.
fn host_refusal(policy: &AddressPolicy, host: &Host<&str>) -> Option<Refusal> {
    match host {
        Host::Ipv4(ip) => policy.refusal(IpAddr::V4(*ip)),
        Host::Ipv6(ip) => policy.refusal(IpAddr::V6(*ip)),
        Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            let loopback = d == "localhost" || d.ends_with(".localhost");
            loopback
                .then(|| policy.refusal(IpAddr::V4(Ipv4Addr::LOCALHOST)))
                .flatten()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::fixtures::{PUBLIC, refused};

    #[test]
    fn production_mode_wants_https_and_public_hosts() {
        assert!(WebhookUrl::parse("https://example.com/hook", false).is_ok());
        for bad in [
            "http://example.com/hook",
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "https://example.com/#frag",
            "https://127.0.0.1/",
            "https://localhost:8443/",
            "https://[::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://0x7f000001/",
            "https://169.254.169.254/latest/meta-data",
            "https://10.1.2.3/",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
            "not a url",
        ] {
            assert!(
                WebhookUrl::parse(bad, false).is_err(),
                "{bad} should be refused"
            );
        }
    }

    #[test]
    fn the_length_limit_holds_for_the_normalised_url() {
        // 2020 bytes as given, three times that once `é` is percent-encoded (found by fuzzing,
        // with punycode hosts).
        let long = format!("https://example.com/{}", "é".repeat(1000));
        assert!(long.len() <= MAX_URL_LEN);
        let err = WebhookUrl::parse(&long, false).unwrap_err();
        assert!(err.contains("longer than"), "{err}");
        let fits = format!("https://example.com/{}", "é".repeat(300));
        let url = WebhookUrl::parse(&fits, false).unwrap();
        assert_eq!(WebhookUrl::parse(url.as_str(), false), Ok(url));
    }

    #[test]
    fn dev_mode_allows_http_and_loopback() {
        assert!(WebhookUrl::parse("http://127.0.0.1:9000/hook", true).is_ok());
        assert!(WebhookUrl::parse("ftp://127.0.0.1/", true).is_err());
    }

    #[test]
    fn allowed_networks_let_their_addresses_through_and_nothing_else() {
        let policy = AddressPolicy::new(false, vec!["127.0.0.0/8".parse().unwrap()]);
        for ok in [
            "https://127.0.0.1:8443/",
            "https://127.1/",
            "https://[::ffff:127.0.0.2]/",
            "https://localhost/",
        ] {
            assert!(WebhookUrl::parse_with(ok, &policy).is_ok(), "{ok}");
        }
        for bad in ["http://127.0.0.1/", "https://10.0.0.1/", "https://[::1]/"] {
            assert!(WebhookUrl::parse_with(bad, &policy).is_err(), "{bad}");
        }
    }

    /// `https://<ip>/h`, with an IPv6 address in brackets.
    fn url_of(ip: &str) -> String {
        match ip.parse::<IpAddr>().unwrap() {
            IpAddr::V4(v4) => format!("https://{v4}/h"),
            IpAddr::V6(v6) => format!("https://[{v6}]/h"),
        }
    }

    #[test]
    fn every_special_purpose_address_is_refused_at_registration_and_named() {
        let policy = AddressPolicy::new(false, Vec::new());
        for (ip, name) in refused() {
            let url = url_of(ip);
            let err = WebhookUrl::parse_with(&url, &policy).unwrap_err();
            assert!(err.contains(name), "{url}: {err}");
        }
        for ip in PUBLIC {
            let url = url_of(ip);
            assert!(WebhookUrl::parse_with(&url, &policy).is_ok(), "{url}");
        }
    }

    #[test]
    fn port_zero_is_refused_in_every_mode() {
        for dev in [false, true] {
            let err = WebhookUrl::parse("https://example.com:0/h", dev).unwrap_err();
            assert!(err.contains("port 0"), "{err}");
            assert!(WebhookUrl::parse("https://example.com:00/h", dev).is_err());
        }
        assert!(WebhookUrl::parse("https://example.com:1/h", false).is_ok());
    }
}
