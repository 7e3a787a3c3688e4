//! The webhook URL check outside dev mode: never panics, and whatever it accepts is an `https`
//! URL without user info or fragment whose host is not a loopback, private or otherwise
//! forbidden address, read the same way again when the stored URL is parsed at delivery time.
#![no_main]

use herald_domain::WebhookUrl;
use herald_domain::address::{AddressPolicy, is_forbidden_ip};
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use url::{Host, Url};

fuzz_target!(|input: &str| {
    let policy = AddressPolicy::new(false, Vec::new());
    let Ok(accepted) = WebhookUrl::parse_with(input, &policy) else {
        return;
    };
    let url = Url::parse(accepted.as_str()).expect("an accepted URL parses again");
    assert_eq!(url.scheme(), "https", "{input:?}");
    assert!(
        url.username().is_empty() && url.password().is_none(),
        "{input:?}"
    );
    assert!(url.fragment().is_none(), "{input:?}");
    match url.host().expect("an accepted URL has a host") {
        Host::Ipv4(ip) => assert!(!is_forbidden_ip(IpAddr::V4(ip)), "{input:?}"),
        Host::Ipv6(ip) => assert!(!is_forbidden_ip(IpAddr::V6(ip)), "{input:?}"),
        Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            assert!(d != "localhost" && !d.ends_with(".localhost"), "{input:?}");
        }
    }
    // What is stored is what the dispatcher reads back: checking it again changes nothing.
    assert_eq!(
        WebhookUrl::parse_with(accepted.as_str(), &policy).as_ref(),
        Ok(&accepted),
        "{input:?}"
    );
});
