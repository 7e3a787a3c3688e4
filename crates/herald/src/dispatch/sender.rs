//! Making one attempt: build the body, sign it, POST it, and classify what happened. A listener
//! webhook's attempt (`herald listen`) is signed the same way but goes down its stream instead
//! ([`super::listeners`]): the HTTP path is never taken for it, whatever its stored URL says.
//! The operator's own webhook (`[operator]`) is trusted configuration: its attempts go through
//! a client of their own that the egress policy does not guard.

use super::listeners::{ListenerHub, RelayAnswer, RelayError, RelayRequest};
use super::message::MessageFormat;
use crate::config::DeliverySettings;
use crate::domain::address::AddressPolicy;
use crate::domain::{Attempt, AttemptId, AttemptOutcome, Timestamp, WebhookKind};
use crate::store::ClaimedDelivery;
use http::HeaderValue;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What an attempt produced: the record to keep and any `Retry-After` the receiver asked for.
pub struct AttemptReport {
    pub outcome: AttemptOutcome,
    pub attempt: Attempt,
    pub retry_after: Option<Duration>,
}

/// Sends deliveries over one shared HTTP client (connection reuse, no redirects).
pub struct Sender {
    client: reqwest::Client,
    /// For the operator's webhook only: no egress guard (its URL is the operator's, not a
    /// customer's), and connections of its own.
    trusted: reqwest::Client,
    policy: AddressPolicy,
    capture: usize,
    node: String,
    format: MessageFormat,
    user_agent: HeaderValue,
    listeners: Arc<ListenerHub>,
}

/// What an attempt came to: its outcome, an error message, the start of the answer, and any
/// `Retry-After`.
type Exchange = (
    AttemptOutcome,
    Option<String>,
    Option<String>,
    Option<Duration>,
);

/// How much longer than the webhook's timeout the server waits for a relayed attempt's answer,
/// so that the CLI's own timeout (the more telling report) normally comes first.
const RELAY_MARGIN: Duration = Duration::from_secs(1);

impl Sender {
    pub fn new(
        settings: &DeliverySettings,
        dev: bool,
        node: String,
        listeners: Arc<ListenerHub>,
    ) -> anyhow::Result<Self> {
        let policy = AddressPolicy::new(dev, settings.allow_networks.clone());
        let user_agent = HeaderValue::try_from(settings.user_agent.as_str())?;
        let builder = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(user_agent.clone())
                .connect_timeout(Duration::from_secs(10))
                .pool_idle_timeout(Duration::from_secs(60))
                .tcp_nodelay(true)
        };
        let client = builder()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
            }))
            .build()?;
        Ok(Self {
            client,
            trusted: builder().build()?,
            policy,
            capture: settings.response_capture_bytes,
            node,
            format: MessageFormat::new(settings)?,
            user_agent,
            listeners,
        })
    }

    /// Makes the attempt `claim` stands for; never fails, whatever the receiver does.
    pub async fn attempt(&self, claim: &ClaimedDelivery) -> AttemptReport {
        let started_at = Timestamp::now();
        let clock = Instant::now();
        let webhook = &claim.webhook;
        let (outcome, error, body, retry_after) = match webhook.kind {
            // Never over HTTP: its URL is no address to POST to.
            WebhookKind::Listener => self.relay(claim, started_at).await,
            WebhookKind::Subscription | WebhookKind::Callback | WebhookKind::Job => {
                match refuse(&self.policy, webhook.url.as_str()) {
                    Some(reason) => (AttemptOutcome::Blocked, Some(reason), None, None),
                    None => self.send(&self.client, claim, started_at).await,
                }
            }
            WebhookKind::Operator => self.send(&self.trusted, claim, started_at).await,
        };
        let attempt = Attempt {
            id: AttemptId::generate(),
            number: claim.attempt_number,
            started_at,
            duration_ms: clock.elapsed().as_millis() as u64,
            status_code: outcome.status_code(),
            error_kind: outcome.error_kind(),
            error,
            response_body: body,
            node: Some(self.node.clone()),
        };
        AttemptReport {
            outcome,
            attempt,
            retry_after,
        }
    }

    /// Sends the attempt down the webhook's `herald listen` stream, signed as over HTTP, and
    /// takes the CLI's report of the local receiver's answer as the outcome.
    async fn relay(&self, claim: &ClaimedDelivery, now: Timestamp) -> Exchange {
        let body = self.format.body(claim);
        let mut headers = self.format.headers(claim, &body, now);
        headers.insert(http::header::USER_AGENT, self.user_agent.clone());
        let timeout = claim.webhook.retry.timeout;
        let request = RelayRequest {
            delivery_id: claim.delivery_id.to_string(),
            event_type: claim.event.event_type.clone(),
            attempt: claim.attempt_number,
            headers: headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect(),
            body: String::from_utf8_lossy(&body).into_owned(),
            timeout,
        };
        let answer = self
            .listeners
            .relay(&claim.webhook.id, request, timeout + RELAY_MARGIN)
            .await;
        match answer {
            Ok(answer) => self.relayed_outcome(answer, timeout),
            Err(e @ RelayError::TimedOut(_)) => {
                (AttemptOutcome::Timeout, Some(e.to_string()), None, None)
            }
            Err(e) => (AttemptOutcome::Connect, Some(e.to_string()), None, None),
        }
    }

    /// The outcome of an attempt as the CLI reported it.
    fn relayed_outcome(&self, answer: RelayAnswer, timeout: Duration) -> Exchange {
        match answer.status {
            Some(code) => {
                let outcome = if (200..300).contains(&code) {
                    AttemptOutcome::Delivered { code }
                } else {
                    AttemptOutcome::Status { code }
                };
                let body = answer
                    .body
                    .filter(|b| !b.is_empty())
                    .map(|b| captured_text(b.as_bytes(), self.capture));
                let retry_after = answer
                    .retry_after
                    .and_then(|v| HeaderValue::try_from(v).ok())
                    .and_then(|v| parse_retry_after(&v));
                (outcome, None, body, retry_after)
            }
            None if answer.timed_out => (
                AttemptOutcome::Timeout,
                Some(format!(
                    "herald listen: the local receiver gave no complete answer within {timeout:?}"
                )),
                None,
                None,
            ),
            None => {
                let why = answer.error.unwrap_or_else(|| "no answer".to_owned());
                let why = captured_text(why.as_bytes(), self.capture);
                (
                    AttemptOutcome::Connect,
                    Some(format!(
                        "herald listen could not reach the local receiver: {why}"
                    )),
                    None,
                    None,
                )
            }
        }
    }

    async fn send(
        &self,
        client: &reqwest::Client,
        claim: &ClaimedDelivery,
        now: Timestamp,
    ) -> Exchange {
        let body = self.format.body(claim);
        let headers = self.format.headers(claim, &body, now);
        let request = client
            .post(claim.webhook.url.as_str())
            .headers(headers)
            .body(body);
        let timeout = claim.webhook.retry.timeout;
        let exchange = async {
            let mut response = request.send().await?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(parse_retry_after);
            let mut captured = Vec::new();
            // A body that breaks off after the status line still leaves us the status.
            while captured.len() < self.capture {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        let room = self.capture - captured.len();
                        captured.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            Ok::<_, reqwest::Error>((status, retry_after, captured))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => (
                AttemptOutcome::Timeout,
                Some(format!("no complete answer within {timeout:?}")),
                None,
                None,
            ),
            Ok(Err(e)) => {
                let (outcome, message) = classify(&e);
                (outcome, Some(message), None, None)
            }
            Ok(Ok((code, retry_after, captured))) => {
                let outcome = if (200..300).contains(&code) {
                    AttemptOutcome::Delivered { code }
                } else {
                    AttemptOutcome::Status { code }
                };
                let body = (!captured.is_empty()).then(|| captured_text(&captured, self.capture));
                (outcome, None, body, retry_after)
            }
        }
    }
}

/// Outside dev mode, refuses plain http and IP-literal URLs whose address the policy refuses,
/// up front: the client connects to a literal without asking the resolver. Host names are
/// checked after DNS by [`GuardedResolver`], with the same policy.
fn refuse(policy: &AddressPolicy, url: &str) -> Option<String> {
    if policy.is_dev() {
        return None;
    }
    let url = url::Url::parse(url).ok()?;
    if url.scheme() != "https" {
        return Some("plain http is allowed only in dev mode".to_owned());
    }
    let ip = match url.host()? {
        url::Host::Ipv4(ip) => IpAddr::V4(ip),
        url::Host::Ipv6(ip) => IpAddr::V6(ip),
        url::Host::Domain(_) => return None,
    };
    let refusal = policy.refusal(ip)?;
    Some(format!("address {ip} is not allowed: {refusal}"))
}

/// The captured bytes as text of at most `limit` bytes. Each invalid byte becomes U+FFFD
/// (three bytes in UTF-8), so a binary answer would otherwise be kept at up to three times
/// the limit.
fn captured_text(captured: &[u8], limit: usize) -> String {
    let mut text = String::from_utf8_lossy(captured).into_owned();
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// `Retry-After` as delta-seconds or an HTTP date.
fn parse_retry_after(v: &HeaderValue) -> Option<Duration> {
    let s = v.to_str().ok()?.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(s).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Maps a transport failure to an error kind and a message free of secrets.
fn classify(e: &reqwest::Error) -> (AttemptOutcome, String) {
    let mut source: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(refusal) = err.downcast_ref::<ResolveRefusal>() {
            let kind = match refusal {
                ResolveRefusal::Blocked(_) => AttemptOutcome::Blocked,
                ResolveRefusal::Lookup(_) => AttemptOutcome::Dns,
            };
            return (kind, refusal.to_string());
        }
        if err.downcast_ref::<rustls::Error>().is_some() {
            return (AttemptOutcome::Tls, format!("TLS error: {err}"));
        }
        source = err.source();
    }
    let chain = error_chain(e);
    if e.is_timeout() {
        (AttemptOutcome::Timeout, chain)
    } else {
        (AttemptOutcome::Connect, chain)
    }
}

fn error_chain(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = source {
        parts.push(err.to_string());
        source = err.source();
    }
    // reqwest's own message names the URL, which may carry a secret path; keep only the causes.
    if parts.len() > 1 {
        parts.remove(0);
    }
    parts.join(": ")
}

/// Why a host name was not resolved to a usable address.
#[derive(Debug, thiserror::Error)]
enum ResolveRefusal {
    #[error("{0} resolves only to addresses that are not allowed")]
    Blocked(String),
    #[error("DNS lookup of {0} failed")]
    Lookup(String),
}

/// Resolves host names and, outside dev mode, drops the addresses the policy refuses. The client connects to exactly the addresses returned here, so a second lookup
/// cannot smuggle in another answer.
struct GuardedResolver {
    policy: AddressPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|_| ResolveRefusal::Lookup(host.clone()))?
                .collect();
            if found.is_empty() {
                return Err(
                    Box::new(ResolveRefusal::Lookup(host)) as Box<dyn StdError + Send + Sync>
                );
            }
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| policy.permits(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(
                    Box::new(ResolveRefusal::Blocked(host)) as Box<dyn StdError + Send + Sync>
                );
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::address::fixtures::{PUBLIC, refused};
    use std::str::FromStr;

    /// The resolver's answer for `host`: what the client may connect to, or why not. An IP
    /// literal resolves to itself, with no DNS query and no traffic.
    async fn resolve(policy: &AddressPolicy, host: &str) -> Result<Vec<IpAddr>, String> {
        let resolver = GuardedResolver {
            policy: policy.clone(),
        };
        match resolver.resolve(Name::from_str(host).unwrap()).await {
            Ok(addrs) => Ok(addrs.map(|a| a.ip()).collect()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[tokio::test]
    async fn the_resolver_drops_every_special_purpose_address() {
        let policy = AddressPolicy::new(false, Vec::new());
        for (ip, _) in refused() {
            let err = resolve(&policy, ip).await.unwrap_err();
            assert!(
                err.contains("resolves only to addresses that are not allowed"),
                "{ip}: {err}"
            );
        }
        for ip in PUBLIC {
            assert_eq!(resolve(&policy, ip).await, Ok(vec![ip.parse().unwrap()]));
        }
        let dev = AddressPolicy::new(true, Vec::new());
        for (ip, _) in refused() {
            assert!(resolve(&dev, ip).await.is_ok(), "{ip}");
        }
    }

    #[test]
    fn literal_addresses_are_refused_before_connecting_and_named() {
        let policy = AddressPolicy::new(false, Vec::new());
        for (ip, name) in refused() {
            let host = match ip.parse::<IpAddr>().unwrap() {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            };
            let reason = refuse(&policy, &format!("https://{host}/h"));
            let reason = reason.unwrap_or_else(|| panic!("{ip} should be refused"));
            assert!(reason.contains(name), "{ip}: {reason}");
        }
        assert_eq!(refuse(&policy, "https://[2606:4700::1111]/h"), None);
        assert_eq!(refuse(&policy, "https://example.com/h"), None);
        let allowed = AddressPolicy::new(false, vec!["198.18.0.0/15".parse().unwrap()]);
        assert_eq!(refuse(&allowed, "https://198.18.0.1/h"), None);
    }

    #[test]
    fn captured_text_stays_within_the_limit_in_bytes() {
        assert_eq!(captured_text(b"hello", 4096), "hello");
        let binary = captured_text(&[0xff; 4096], 4096);
        assert!(
            binary.len() <= 4096 && binary.len() > 4090,
            "{}",
            binary.len()
        );
        assert!(binary.chars().all(|c| c == char::REPLACEMENT_CHARACTER));
        assert_eq!(captured_text("é".repeat(3).as_bytes(), 5), "éé");
    }
}
