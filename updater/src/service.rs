//! One HTTP request: routing, then the dyndns2 update from credentials to
//! answer lines.
//!
//! Order of work, cheapest first (hickory's `handle_request` habit): route,
//! User-Agent, credentials present, per-address failure budget, host names,
//! the host mirror (once fresh, see `mirror`) with the credential cache,
//! else one indexed read per host and the cache, and only then argon2 on
//! the bounded verifier. Internal errors are logged here and answered as
//! `911`; this module must never show a database error or a secret to a
//! client, and never answer `good` before the commit returned.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ddserver_store::{Actor, HostCredential, HostUpdate, Name, StoreError};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::State;
use crate::auth::{self, Credentials, VerifyError};
use crate::limit::address_key;
use crate::mirror::{self, MirroredHost};
use crate::protocol::{self, Answer, MAX_HOSTS, Params, Shown};
use crate::proxy;

/// Form bodies (POST updates) larger than this are refused.
const MAX_BODY: usize = 8 * 1024;

/// The ACME DNS-01 label (RFC 8555 §8.4): `hostname=_acme-challenge.HOST`
/// with `txt=` sets HOST's challenge TXT record.
const ACME_LABEL: &str = "_acme-challenge.";

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    // Answers are per request; a cache in between must never replay one.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Routes one request.
pub(crate) async fn handle(
    state: &State,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    if !matches!(method, Method::GET | Method::POST | Method::HEAD) {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, POST, HEAD"));
        return response;
    }
    match path.as_str() {
        // A HEAD request must not change anything (RFC 9110 §9.2.1).
        "/nic/update" | "/update" | "/v3/update" if method == Method::HEAD => {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
            response
        }
        "/nic/update" | "/update" | "/v3/update" => {
            let started = Instant::now();
            let response = update(state, request, peer).await;
            state.metrics.request(started.elapsed());
            response
        }
        "/nic/ip" | "/ip" => {
            let client =
                proxy::client_address(peer.ip(), request.headers(), &state.config.trusted_proxies);
            text(StatusCode::OK, format!("{client}\n"))
        }
        // Liveness: the process answers. Readiness: the database answered
        // its last check too, so a load balancer can send routers to an
        // updater that can commit rather than to one that answers `911`.
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if state.metrics.database_up.load(Ordering::Relaxed) => {
            text(StatusCode::OK, "ready\n")
        }
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n"),
        "/metrics" => {
            state
                .metrics
                .commit_batches
                .store(state.store.group_commit_batches(), Ordering::Relaxed);
            let mut response = text(StatusCode::OK, state.metrics.render(&state.mirror));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// The answer to an update before it becomes a response.
struct Outcome {
    answers: Vec<Answer>,
    /// 401 with a challenge.
    challenge: bool,
}

impl Outcome {
    fn once(answer: Answer) -> Outcome {
        Outcome {
            challenge: answer == Answer::Badauth,
            answers: vec![answer],
        }
    }
}

/// What an update request says, read from its untrusted parts without any
/// I/O (the fuzz target `update_request` drives exactly this).
pub(crate) struct UpdateRequest {
    /// The client: the peer, or the address a trusted proxy forwarded.
    pub(crate) client: IpAddr,
    /// The User-Agent, trimmed; empty when absent or not visible ASCII.
    pub(crate) agent: String,
    /// HTTP Basic credentials, else `username=`/`password=`.
    pub(crate) credentials: Option<Credentials>,
    pub(crate) params: Params,
}

impl UpdateRequest {
    /// Reads the headers, the query string and a form body (POST).
    pub(crate) fn read(
        peer: IpAddr,
        headers: &hyper::HeaderMap,
        query: &[u8],
        body: &[u8],
        trusted_proxies: &[proxy::Network],
    ) -> UpdateRequest {
        let client = proxy::client_address(peer, headers, trusted_proxies);
        let agent = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .trim()
            .to_owned();
        // Borrowed from the request unless percent-decoding changed them.
        let pairs: Vec<_> = form_urlencoded::parse(query)
            .chain(form_urlencoded::parse(body))
            .collect();
        let params = Params::from_pairs(pairs.iter().map(|(k, v)| (k.as_ref(), v.as_ref())));
        let credentials = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| auth::parse_basic(v.as_bytes()))
            .or_else(|| match (&params.username, &params.password) {
                (Some(user), Some(password)) if !user.is_empty() => Some(Credentials {
                    user: user.clone(),
                    password: password.clone(),
                }),
                _ => None,
            });
        UpdateRequest {
            client,
            agent,
            credentials,
            params,
        }
    }
}

async fn update(
    state: &State,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = if parts.method == Method::POST {
        match Limited::new(body, MAX_BODY).collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"),
        }
    } else {
        Bytes::new()
    };
    let request = UpdateRequest::read(
        peer.ip(),
        &parts.headers,
        parts.uri.query().unwrap_or("").as_bytes(),
        &body,
        &state.config.trusted_proxies,
    );
    let outcome = run_update(state, request).await;
    for answer in &outcome.answers {
        state.metrics.answer(answer);
    }
    let retry_after = outcome
        .answers
        .iter()
        .filter_map(|a| match a {
            Answer::Abuse(Some(seconds)) => Some(*seconds),
            _ => None,
        })
        .max();
    let all_limited = outcome
        .answers
        .iter()
        .all(|a| matches!(a, Answer::Abuse(Some(_))));
    let status = if outcome.challenge {
        StatusCode::UNAUTHORIZED
    } else if all_limited {
        StatusCode::TOO_MANY_REQUESTS
    } else {
        StatusCode::OK
    };
    let mut response = text(status, protocol::render(&outcome.answers));
    if outcome.challenge {
        // RFC 7617 §2: the challenge that makes GNU wget and some routers
        // send their credentials at all.
        if let Ok(value) = HeaderValue::from_str(&format!(
            "Basic realm=\"{}\", charset=\"UTF-8\"",
            state.config.realm
        )) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
    }
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    }
    response
}

/// What the answer to one authenticated host depends on, from its row or
/// from the host mirror.
struct HostState {
    id: i64,
    fqdn: Name,
    ipv4: Option<std::net::Ipv4Addr>,
    ipv6: Option<std::net::Ipv6Addr>,
    wildcard: bool,
    offline: bool,
    disabled: bool,
}

impl HostState {
    fn read(row: HostCredential) -> HostState {
        HostState {
            id: row.id,
            fqdn: row.fqdn,
            ipv4: row.ipv4,
            ipv6: row.ipv6,
            wildcard: row.flags.wildcard,
            offline: row.flags.offline,
            disabled: row.flags.disabled.is_some(),
        }
    }

    fn mirrored(fqdn: &Name, host: &MirroredHost) -> HostState {
        HostState {
            id: host.id,
            fqdn: fqdn.clone(),
            ipv4: host.ipv4,
            ipv6: host.ipv6,
            wildcard: host.wildcard,
            offline: host.offline,
            disabled: host.disabled,
        }
    }
}

/// A requested host name after parsing.
#[derive(Debug)]
pub(crate) enum Target {
    /// Not a usable name: `notfqdn` for this line.
    Invalid,
    /// A host; `acme` when it was named as `_acme-challenge.HOST`.
    Host { fqdn: Name, acme: bool },
}

/// The hosts a request names: `hostname`'s list, else the user name when it
/// is a host name (dyndns2 clients configured with the host as user name
/// may leave `hostname` out). `Err`: the one answer for the whole request.
pub(crate) fn targets(params: &Params, credentials: &Credentials) -> Result<Vec<Target>, Answer> {
    let names: &[String] = match &params.hostnames {
        Some(names) if !names.is_empty() => names,
        _ if credentials.user.contains('.') => std::slice::from_ref(&credentials.user),
        _ => return Err(Answer::Notfqdn),
    };
    if names.len() > MAX_HOSTS {
        return Err(Answer::Numhost);
    }
    Ok(names.iter().map(|n| parse_target(n)).collect())
}

fn parse_target(raw: &str) -> Target {
    let lower = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let (name, acme) = match lower.strip_prefix(ACME_LABEL) {
        Some(rest) => (rest.to_owned(), true),
        None => (lower, false),
    };
    match Name::parse(&name) {
        // A fully-qualified host name has at least two labels.
        Ok(fqdn) if fqdn.is_hostname() && fqdn.as_str().contains('.') => {
            Target::Host { fqdn, acme }
        }
        _ => Target::Invalid,
    }
}

fn seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

async fn run_update(state: &State, request: UpdateRequest) -> Outcome {
    let UpdateRequest {
        client,
        agent,
        credentials,
        params,
    } = request;
    let agent = agent.as_str();
    if state.config.require_user_agent && agent.is_empty() {
        return Outcome::once(Answer::Badagent);
    }
    let Some(credentials) = credentials else {
        return Outcome::once(Answer::Badauth);
    };
    let address = address_key(client);
    if let Err(wait) = state.failures_by_address.check(&address) {
        return Outcome::once(Answer::Abuse(Some(seconds(wait))));
    }
    let targets = match targets(&params, &credentials) {
        Ok(targets) => targets,
        Err(answer) => return Outcome::once(answer),
    };
    let user_fqdn = Name::parse(credentials.user.trim().trim_end_matches('.')).ok();

    // Authenticate every named host: from the host mirror when it is fresh
    // and the credentials are cached; else one indexed read each, then the
    // cache, then argon2. Unknown hosts cost a dummy verification, so
    // neither the answer nor its timing tells a stranger whether a name
    // exists.
    // Every failed verification costs the client address one token, so a
    // request naming 20 hosts with a wrong password cannot buy 20 argon2
    // runs for the price of one failure.
    let user = credentials.user.to_ascii_lowercase();
    // The user name is the owner's account name or the host's own name
    // (compared as an A-label, so a Unicode host name works too).
    let user_may = |owner: &str, owner_active: bool, fqdn: &Name| {
        owner_active && (user == owner || user_fqdn.as_ref().is_some_and(|u| u == fqdn))
    };
    let mirror_fresh =
        targets.iter().any(|t| matches!(t, Target::Host { .. })) && state.mirror.fresh().await;
    let mut verified: Vec<Option<HostState>> = Vec::with_capacity(targets.len());
    let mut host_limited: Vec<Option<u64>> = vec![None; targets.len()];
    let mut address_limited: Option<u64> = None;
    for (i, target) in targets.iter().enumerate() {
        let Target::Host { fqdn, .. } = target else {
            verified.push(None);
            continue;
        };
        if address_limited.is_some() {
            verified.push(None);
            continue;
        }
        if let Err(wait) = state.failures_by_host.check(fqdn) {
            host_limited[i] = Some(seconds(wait));
            verified.push(None);
            continue;
        }
        if mirror_fresh
            && let Some(host) = state.mirror.get(fqdn.as_str())
            && user_may(&host.owner, host.owner_active, fqdn)
            && state.cache.contains(
                &state
                    .cache
                    .key_for(fqdn.as_str(), &credentials, &host.secret),
            )
        {
            state.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
            state.metrics.mirror_hits.fetch_add(1, Ordering::Relaxed);
            verified.push(Some(HostState::mirrored(fqdn, &host)));
            continue;
        }
        let row = match state.store.host_credential(fqdn).await {
            Ok(row) => row,
            Err(e) => {
                if let Some(left_out) = state.database_errors.allow() {
                    tracing::error!(left_out, "updater: reading host {fqdn} failed: {e}");
                }
                return Outcome::once(Answer::ServerError);
            }
        };
        let ok = match row {
            Some(row) => {
                let key = state.cache.key_for(
                    fqdn.as_str(),
                    &credentials,
                    &mirror::fingerprint(&row.secret),
                );
                let may = user_may(&row.owner, row.owner_active, &row.fqdn);
                if state.cache.contains(&key) && may {
                    state.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
                    Some(HostState::read(row))
                } else {
                    state.metrics.cache_misses.fetch_add(1, Ordering::Relaxed);
                    state.metrics.verifications.fetch_add(1, Ordering::Relaxed);
                    match state
                        .verifier
                        .verify(&credentials.password, Some(row.secret.clone()))
                        .await
                    {
                        Ok(true) if may => {
                            state.cache.insert(key);
                            Some(HostState::read(row))
                        }
                        Ok(_) => None,
                        Err(e) => return verifier_failed(state, &e),
                    }
                }
            }
            None => {
                state.metrics.cache_misses.fetch_add(1, Ordering::Relaxed);
                state.metrics.verifications.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = state.verifier.verify(&credentials.password, None).await {
                    return verifier_failed(state, &e);
                }
                None
            }
        };
        if ok.is_none() {
            let _ = state.failures_by_host.take(fqdn);
            if let Err(wait) = state.failures_by_address.take(&address) {
                address_limited = Some(seconds(wait));
            }
        }
        verified.push(ok);
    }
    if verified.iter().all(Option::is_none) {
        // No named host accepted these credentials: an account-level
        // failure, answered once (dyndns2), and counted against the address.
        if targets.iter().all(|t| matches!(t, Target::Invalid)) {
            return Outcome::once(Answer::Notfqdn);
        }
        // A request that only met rate limits (no verification failed
        // here) says when to come back.
        let failed_here = targets
            .iter()
            .zip(&host_limited)
            .any(|(t, limited)| matches!(t, Target::Host { .. }) && limited.is_none());
        if !failed_here && let Some(wait) = host_limited.iter().flatten().max() {
            return Outcome::once(Answer::Abuse(Some(*wait)));
        }
        return Outcome::once(Answer::Badauth);
    }

    let actor = Actor {
        name: credentials.user.to_ascii_lowercase(),
        address: Some(client),
    };
    // Without any address in the request, the client's own address goes
    // into the record of its family; the other family is left alone.
    let (want_v4, want_v6) = match (params.ipv4, params.ipv6) {
        (None, None) => match client {
            IpAddr::V4(v4) => (Some(v4), None),
            IpAddr::V6(v6) => (None, Some(v6)),
        },
        given => given,
    };
    let mut answers = Vec::with_capacity(targets.len());
    for ((target, row), limited) in targets.iter().zip(verified).zip(host_limited) {
        let answer = match (target, row) {
            (Target::Invalid, _) => Answer::Notfqdn,
            (_, None) => match limited {
                Some(wait) => Answer::Abuse(Some(wait)),
                None => Answer::Nohost,
            },
            (Target::Host { .. }, Some(row)) if row.disabled => Answer::Abuse(None),
            (Target::Host { fqdn, acme: true }, Some(_)) => {
                set_txt(state, &actor, fqdn, params.txt.as_deref()).await
            }
            (Target::Host { fqdn, acme: false }, Some(row)) => {
                if let Some(txt) = params.txt.as_deref()
                    && want_v4.is_none()
                    && want_v6.is_none()
                {
                    set_txt(state, &actor, fqdn, Some(txt)).await
                } else {
                    update_one(state, &actor, agent, &row, want_v4, want_v6, &params).await
                }
            }
        };
        answers.push(answer);
    }
    Outcome {
        answers,
        challenge: false,
    }
}

/// The verifier could not run (no argon2 slot in time): `911`, so the
/// client retries later, logged at most once per interval.
fn verifier_failed(state: &State, e: &VerifyError) -> Outcome {
    if let Some(left_out) = state.verifier_errors.allow() {
        tracing::warn!(left_out, "updater: {e}");
    }
    Outcome::once(Answer::ServerError)
}

async fn set_txt(state: &State, actor: &Actor, fqdn: &Name, txt: Option<&str>) -> Answer {
    let Some(txt) = txt else {
        // `_acme-challenge.HOST` without `txt=`: nothing to set.
        return Answer::Dnserr;
    };
    let values = if txt.is_empty() {
        Vec::new()
    } else {
        vec![txt.to_owned()]
    };
    match state.store.set_host_txt(actor, fqdn, values).await {
        Ok(()) => Answer::Good(Shown::default()),
        Err(StoreError::InvalidInput { .. }) => Answer::Dnserr,
        Err(StoreError::HostDisabled { .. }) => Answer::Abuse(None),
        Err(StoreError::UnknownHost { .. }) => Answer::Nohost,
        Err(e) => {
            if let Some(left_out) = state.database_errors.allow() {
                tracing::error!(left_out, "updater: setting TXT of {fqdn} failed: {e}");
            }
            Answer::ServerError
        }
    }
}

async fn update_one(
    state: &State,
    actor: &Actor,
    agent: &str,
    row: &HostState,
    want_v4: Option<std::net::Ipv4Addr>,
    want_v6: Option<std::net::Ipv6Addr>,
    params: &Params,
) -> Answer {
    // Any update brings an offline host back unless it says offline=YES.
    let offline = params.offline.unwrap_or(false);
    let unchanged = want_v4.is_none_or(|a| row.ipv4 == Some(a))
        && want_v6.is_none_or(|a| row.ipv6 == Some(a))
        && row.offline == offline
        && params.wildcard.is_none_or(|w| row.wildcard == w);
    let shown = |ipv4, ipv6| Shown {
        ipv4: if want_v4.is_some() || want_v6.is_none() {
            ipv4
        } else {
            None
        },
        ipv6: if want_v6.is_some() { ipv6 } else { None },
    };
    if unchanged {
        // Answered from what we just read (or from the fresh mirror),
        // without a write; the last-seen time goes to the database with the
        // next batch.
        state.seen.record(row.id);
        return Answer::Nochg(shown(row.ipv4, row.ipv6));
    }
    if let Err(wait) = state.updates_by_host.take(&row.fqdn) {
        return Answer::Abuse(Some(seconds(wait)));
    }
    let update = HostUpdate {
        fqdn: row.fqdn.clone(),
        ipv4: want_v4.map(Some),
        ipv6: want_v6.map(Some),
        offline: Some(offline),
        wildcard: params.wildcard,
        actor: actor.clone(),
        user_agent: agent.to_owned(),
    };
    // Grouped with concurrent requests' updates into one transaction.
    match state.store.update_host(update).await {
        Ok(done) if done.changed => Answer::Good(shown(done.ipv4, done.ipv6)),
        Ok(done) => Answer::Nochg(shown(done.ipv4, done.ipv6)),
        // The host vanished or was disabled between authentication and commit.
        Err(StoreError::UnknownHost { .. }) => Answer::Nohost,
        Err(StoreError::HostDisabled { .. }) => Answer::Abuse(None),
        Err(e) => {
            if let Some(left_out) = state.database_errors.allow() {
                tracing::error!(
                    host = %row.fqdn,
                    left_out,
                    "updater: committing a host update failed: {e}"
                );
            }
            Answer::ServerError
        }
    }
}
