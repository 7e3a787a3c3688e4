//! The egress address policy: which IP addresses a delivery may reach. One policy for every
//! address, used when a webhook URL is saved and again on every address a host name resolves to
//! at connect time.
//!
//! Outside dev mode an address is refused when it lies in a block of the IANA IPv4 or IPv6
//! Special-Purpose Address Registry (RFC 6890 and the RFCs that added to it), is multicast, or is
//! IPv6 space outside global unicast (2000::/3). The registries mark a few of their blocks
//! "globally reachable"; these are refused too, because none is where a webhook receiver lives:
//! - anycast service addresses: PCP 192.0.0.9 and 2001:1::1 (RFC 7723), TURN 192.0.0.10 and
//!   2001:1::2 (RFC 8155), DNS-SD registration 2001:1::3 (RFC 9665), AMT relays (RFC 7450),
//!   AS112 DNS sinks (RFC 7534, RFC 7535). Anycast reaches whichever instance is nearest, often
//!   the operator's own CGN or DNS box, so these are internal networks in all but name;
//! - identifiers that are not locators: ORCHIDv2 (RFC 7343) and drone entity tags (RFC 9374),
//!   both inside IETF protocol assignments 2001::/23, refused whole.
//!
//! Addresses that embed an IPv4 address:
//! - IPv4-mapped `::ffff:a.b.c.d` (RFC 4291 §2.5.5.2) and the NAT64 well-known prefix
//!   `64:ff9b::/96` (RFC 6052, "globally reachable" in the registry) are judged by the IPv4
//!   address they carry: a socket or a NAT64 gateway sends the traffic there;
//! - IPv4-compatible `::a.b.c.d` (deprecated, RFC 4291 §2.5.5.1), local-use NAT64
//!   `64:ff9b:1::/48` (RFC 8215), 6to4 `2002::/16` (RFC 3056, relays deprecated by RFC 7526) and
//!   Teredo `2001::/32` (RFC 4380, client address the bitwise NOT of the last 32 bits) are refused
//!   whatever they embed. The registry's Globally Reachable column says False for the first two
//!   and N/A (not True) for 6to4 and Teredo: tunnels whose far end is the embedded IPv4 address,
//!   reached through whatever relay is nearest.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where deliveries may go: public addresses only, plus the networks the operator listed in
/// `delivery.allow_networks`; anything in dev mode.
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
        self.refusal(ip).is_none()
    }

    /// Why a delivery may not connect to `ip`, or `None` if it may.
    pub fn refusal(&self, ip: IpAddr) -> Option<Refusal> {
        // `::ffff:127.0.0.1` is allowed as the IPv4 address it stands for.
        let allowed = self
            .allow
            .iter()
            .any(|net| net.contains(&ip.to_canonical()));
        if self.dev || allowed {
            return None;
        }
        special_purpose(ip)
    }
}

/// A block of addresses set aside for a special purpose, and the RFC that did it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub net: IpNet,
    pub name: &'static str,
    pub rfc: &'static str,
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, {})", self.name, self.net, self.rfc)
    }
}

/// Why an address is refused: the block it is in, or, for an address that carries an IPv4
/// address, the block of that IPv4 address and the form that carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub block: &'static Block,
    pub form: Option<&'static Block>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.form {
            None => write!(f, "{}", self.block),
            Some(form) => write!(f, "{} in {form}", self.block),
        }
    }
}

/// The block that makes `ip` unfit for a delivery outside dev mode, if any.
pub fn special_purpose(ip: IpAddr) -> Option<Refusal> {
    let direct = |ip: IpAddr| {
        BLOCKS
            .iter()
            .find(|b| b.net.contains(&ip))
            .map(|block| Refusal { block, form: None })
    };
    let IpAddr::V6(v6) = ip else {
        return direct(ip);
    };
    let carried = if let Some(v4) = v6.to_ipv4_mapped() {
        Some((v4, &IPV4_MAPPED))
    } else if NAT64.net.contains(&ip) {
        let [.., a, b, c, d] = v6.octets();
        Some((Ipv4Addr::new(a, b, c, d), &NAT64))
    } else {
        None
    };
    match carried {
        Some((v4, form)) => direct(IpAddr::V4(v4)).map(|r| Refusal {
            block: r.block,
            form: Some(form),
        }),
        None => direct(ip),
    }
}

/// Is `ip` refused outside dev mode (with no networks allowed)?
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    special_purpose(ip).is_some()
}

const IPV4_MAPPED: Block = v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96, "IPv4-mapped", "RFC 4291");
const NAT64: Block = v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96, "NAT64", "RFC 6052");

/// The refused blocks, the more specific before the blocks that contain them so that an
/// address is named by the narrowest purpose (checked by a test).
const BLOCKS: [Block; 49] = [
    // IANA IPv4 Special-Purpose Address Registry.
    v4([0, 0, 0, 0], 8, "this network", "RFC 791"),
    v4([10, 0, 0, 0], 8, "private-use", "RFC 1918"),
    v4(
        [100, 64, 0, 0],
        10,
        "shared address space (CGNAT)",
        "RFC 6598",
    ),
    v4([127, 0, 0, 0], 8, "loopback", "RFC 1122"),
    v4([169, 254, 0, 0], 16, "link-local", "RFC 3927"),
    v4([172, 16, 0, 0], 12, "private-use", "RFC 1918"),
    v4([192, 0, 0, 9], 32, "PCP anycast", "RFC 7723"),
    v4([192, 0, 0, 10], 32, "TURN anycast", "RFC 8155"),
    v4([192, 0, 0, 0], 24, "IETF protocol assignments", "RFC 6890"),
    v4([192, 0, 2, 0], 24, "documentation (TEST-NET-1)", "RFC 5737"),
    v4([192, 31, 196, 0], 24, "AS112", "RFC 7535"),
    v4([192, 52, 193, 0], 24, "AMT relay anycast", "RFC 7450"),
    v4(
        [192, 88, 99, 0],
        24,
        "6to4 relay anycast (deprecated)",
        "RFC 7526",
    ),
    v4([192, 168, 0, 0], 16, "private-use", "RFC 1918"),
    v4([192, 175, 48, 0], 24, "AS112 direct delegation", "RFC 7534"),
    v4([198, 18, 0, 0], 15, "benchmarking", "RFC 2544"),
    v4(
        [198, 51, 100, 0],
        24,
        "documentation (TEST-NET-2)",
        "RFC 5737",
    ),
    v4(
        [203, 0, 113, 0],
        24,
        "documentation (TEST-NET-3)",
        "RFC 5737",
    ),
    v4([224, 0, 0, 0], 4, "multicast", "RFC 5771"),
    v4([255, 255, 255, 255], 32, "limited broadcast", "RFC 919"),
    v4([240, 0, 0, 0], 4, "reserved", "RFC 1112"),
    // IANA IPv6 Special-Purpose Address Registry. IPv4-mapped and NAT64 addresses never get
    // here: they are judged by the IPv4 address they carry.
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128, "unspecified", "RFC 4291"),
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128, "loopback", "RFC 4291"),
    v6(
        [0, 0, 0, 0, 0, 0, 0, 0],
        96,
        "IPv4-compatible (deprecated)",
        "RFC 4291",
    ),
    v6(
        [0x64, 0xff9b, 1, 0, 0, 0, 0, 0],
        48,
        "local-use NAT64",
        "RFC 8215",
    ),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "discard-only", "RFC 6666"),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, "Teredo", "RFC 4380"),
    v6(
        [0x2001, 1, 0, 0, 0, 0, 0, 1],
        128,
        "PCP anycast",
        "RFC 7723",
    ),
    v6(
        [0x2001, 1, 0, 0, 0, 0, 0, 2],
        128,
        "TURN anycast",
        "RFC 8155",
    ),
    v6(
        [0x2001, 1, 0, 0, 0, 0, 0, 3],
        128,
        "DNS-SD registration anycast",
        "RFC 9665",
    ),
    v6(
        [0x2001, 2, 0, 0, 0, 0, 0, 0],
        48,
        "benchmarking",
        "RFC 5180",
    ),
    v6(
        [0x2001, 3, 0, 0, 0, 0, 0, 0],
        32,
        "AMT relay anycast",
        "RFC 7450",
    ),
    v6([0x2001, 4, 0x112, 0, 0, 0, 0, 0], 48, "AS112", "RFC 7535"),
    v6(
        [0x2001, 0x10, 0, 0, 0, 0, 0, 0],
        28,
        "ORCHID (deprecated)",
        "RFC 4843",
    ),
    v6([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28, "ORCHIDv2", "RFC 7343"),
    v6(
        [0x2001, 0x30, 0, 0, 0, 0, 0, 0],
        28,
        "drone entity tags",
        "RFC 9374",
    ),
    v6(
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        23,
        "IETF protocol assignments",
        "RFC 2928",
    ),
    v6(
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
        32,
        "documentation",
        "RFC 3849",
    ),
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, "6to4", "RFC 3056"),
    v6(
        [0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0],
        48,
        "AS112 direct delegation",
        "RFC 7534",
    ),
    v6(
        [0x3fff, 0, 0, 0, 0, 0, 0, 0],
        20,
        "documentation",
        "RFC 9637",
    ),
    v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16, "SRv6 SIDs", "RFC 9602"),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "unique local", "RFC 4193"),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local", "RFC 4291"),
    v6(
        [0xfec0, 0, 0, 0, 0, 0, 0, 0],
        10,
        "site-local (deprecated)",
        "RFC 3879",
    ),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast", "RFC 4291"),
    // Beyond the registry, IPv6 space outside global unicast 2000::/3 is reserved by the IETF
    // (IANA IPv6 Address Space registry): ::/3, 4000::/2 and 8000::/1 make up the rest.
    v6(
        [0, 0, 0, 0, 0, 0, 0, 0],
        3,
        "reserved, not global unicast",
        "RFC 4291",
    ),
    v6(
        [0x4000, 0, 0, 0, 0, 0, 0, 0],
        2,
        "reserved, not global unicast",
        "RFC 4291",
    ),
    v6(
        [0x8000, 0, 0, 0, 0, 0, 0, 0],
        1,
        "reserved, not global unicast",
        "RFC 4291",
    ),
];

const fn v4(o: [u8; 4], len: u8, name: &'static str, rfc: &'static str) -> Block {
    let ip = Ipv4Addr::new(o[0], o[1], o[2], o[3]);
    Block {
        net: IpNet::V4(Ipv4Net::new_assert(ip, len)),
        name,
        rfc,
    }
}

const fn v6(s: [u16; 8], len: u8, name: &'static str, rfc: &'static str) -> Block {
    let ip = Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]);
    Block {
        net: IpNet::V6(Ipv6Net::new_assert(ip, len)),
        name,
        rfc,
    }
}

/// The addresses the tests of the policy, the URL check and the server's connect-time resolver
/// and SSRF tests share (feature `test-fixtures`, for the server's tests).
#[cfg(any(test, feature = "test-fixtures"))]
pub mod fixtures {
    /// Each refused address with the name of its block, from the list the integration tests
    /// register too.
    pub fn refused() -> impl Iterator<Item = (&'static str, &'static str)> {
        include_str!("../tests/data/special_purpose_addresses.txt")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (ip, name) = l.split_once(' ').expect("an address, then a name");
                (ip, name.trim())
            })
    }

    /// Globally reachable addresses, some just outside a refused block.
    pub const PUBLIC: [&str; 14] = [
        "93.184.216.34",
        "1.1.1.1",
        "8.8.8.8",
        "100.128.0.1",
        "192.0.1.1",
        "198.20.0.1",
        "223.255.255.254",
        "2606:4700::1111",
        "2606:2800:220:1:248:1893:25c8:1946",
        "2001:200::1",
        "2003::1",
        "3fff:1000::1",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
    ];
}

#[cfg(test)]
mod tests {
    use super::fixtures::{PUBLIC, refused};
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn every_special_purpose_address_is_refused_and_named_by_its_block() {
        let policy = AddressPolicy::new(false, Vec::new());
        let mut count = 0;
        for (addr, name) in refused() {
            let refusal = policy.refusal(ip(addr));
            let refusal = refusal.unwrap_or_else(|| panic!("{addr} should be refused"));
            assert!(refusal.to_string().contains(name), "{addr}: {refusal}");
            assert!(!policy.permits(ip(addr)), "{addr}");
            count += 1;
        }
        assert!(count >= 40, "only {count} addresses");
    }

    #[test]
    fn globally_reachable_addresses_are_permitted() {
        let policy = AddressPolicy::new(false, Vec::new());
        for addr in PUBLIC {
            assert_eq!(policy.refusal(ip(addr)), None, "{addr}");
        }
    }

    #[test]
    fn each_block_is_reachable_past_the_blocks_listed_before_it() {
        for (i, later) in BLOCKS.iter().enumerate() {
            assert_eq!(later.net, later.net.trunc(), "{later}: host bits set");
            for earlier in &BLOCKS[..i] {
                assert!(
                    !earlier.net.contains(&later.net),
                    "{later} is hidden by {earlier}"
                );
            }
        }
    }

    #[test]
    fn dev_mode_permits_everything() {
        let policy = AddressPolicy::new(true, Vec::new());
        for (addr, _) in refused() {
            assert!(policy.permits(ip(addr)), "{addr}");
        }
    }

    #[test]
    fn allowed_networks_open_what_they_name_and_nothing_else() {
        let policy = AddressPolicy::new(
            false,
            vec![
                "127.0.0.0/8".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ],
        );
        for addr in ["127.0.0.1", "::ffff:127.0.0.1", "2001:db8::1"] {
            assert!(policy.permits(ip(addr)), "{addr}");
        }
        // A tunnel or translator that would carry traffic to 127.0.0.1 is not 127.0.0.1.
        for addr in ["::1", "64:ff9b::7f00:1", "2002:7f00:1::", "10.0.0.1"] {
            assert!(!policy.permits(ip(addr)), "{addr}");
        }
    }
}
