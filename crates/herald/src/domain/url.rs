//! Webhook URLs and the address policy that keeps deliveries off private networks.

use super::shown::shown;
use ipnet::IpNet;
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use url::{Host, Url};

const MAX_URL_LEN: usize = 2048;

/// A URL that passed the webhook rules for the server's mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct WebhookUrl(String);

/// Where deliveries may go: public addresses only, plus the networks the operator listed in
/// `delivery.allow_networks`; anything in dev mode. Checked on the URL when a webhook is saved
/// and again on every resolved address at connect time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    dev: bool,
    allow: Vec<IpNet>,
}

impl AddressPolicy {
    pub fn new(dev: bool, allow: Vec<IpNet>) -> Self {
        Self { dev, allow }
    }

    pub fn is_dev(&self) -> bool {
        self.dev
    }

    /// May a delivery connect to `ip`?
    pub fn permits(&self, ip: IpAddr) -> bool {
        // `::ffff:127.0.0.1` is checked as the IPv4 address it stands for.
        let ip = ip.to_canonical();
        self.dev || !is_forbidden_ip(ip) || self.allow.iter().any(|net| net.contains(&ip))
    }

    fn permits_host(&self, host: &Host<&str>) -> bool {
        match host {
            Host::Ipv4(ip) => self.permits(IpAddr::V4(*ip)),
            Host::Ipv6(ip) => self.permits(IpAddr::V6(*ip)),
            // `localhost` names loopback whatever DNS says (RFC 6761 §6.3).
            Host::Domain(d) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                let loopback = d == "localhost" || d.ends_with(".localhost");
                !loopback || self.permits(IpAddr::V4(Ipv4Addr::LOCALHOST))
            }
        }
    }
}

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
        if !policy.permits_host(&host) {
            return Err("URL points to a loopback, private or link-local address; allowed only in --dev mode or in delivery.allow_networks".to_owned());
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

/// Addresses a delivery must never reach outside dev mode: loopback, private, link-local
/// (cloud metadata included), CGNAT, multicast, unspecified, broadcast, and the IPv6 forms
/// that embed one of those.
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => is_forbidden_v6(v6),
    }
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64.0.0/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || o[0] >= 240 // reserved
}

fn is_forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_forbidden_v4(v4);
    }
    let seg = ip.segments();
    // IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::/96) embed an IPv4 address.
    if seg[..6] == [0, 0, 0, 0, 0, 0] || seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let v4 = Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        );
        return ip.is_loopback() || ip.is_unspecified() || is_forbidden_v4(v4);
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn public_addresses_are_allowed() {
        assert!(!is_forbidden_ip("93.184.216.34".parse().unwrap()));
        assert!(!is_forbidden_ip(
            "2606:2800:220:1:248:1893:25c8:1946".parse().unwrap()
        ));
        assert!(is_forbidden_ip("fd00::1".parse().unwrap()));
        assert!(is_forbidden_ip("64:ff9b::a00:1".parse().unwrap()));
    }
}
