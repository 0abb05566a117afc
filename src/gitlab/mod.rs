//! The only code that speaks HTTP to GitLab: authentication, the retry policy, pagination and
//! error mapping are written once here; `endpoints.rs` has one small function per endpoint.
//!
//! Retry policy: reads (`GET`) and variable writes (`PUT`, `DELETE`) are retried on transport
//! failures, 5xx and 429 (after `Retry-After`), with exponential backoff inside a time budget.
//! `POST` is never retried here: a rotate must never be replayed (§1.5), so the engine decides
//! what to do after a lost answer from GitLab's state.

mod answers;
mod endpoints;
pub use endpoints::{SelfResource, TokenHome};
pub mod model;

use crate::secret::{redact_known, Secret};
use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How long a connection may take to open, at most (less when `--timeout` is shorter).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest answer patrol reads; GitLab's largest page of 100 tokens is far smaller.
const MAX_BODY: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum GitlabError {
    /// No answer: the request may or may not have been carried out.
    #[error("no answer from GitLab for {method} {path}: {detail}")]
    Transport { method: String, path: String, detail: String },
    /// No connection could be made, and trying again will not make one: the host name does not
    /// resolve, nothing listens on the port, or the TLS certificate is refused. Nothing was sent.
    /// `problem` says which host, what went wrong and what to do.
    #[error("cannot connect to GitLab for {method} {path}: {problem}")]
    Unreachable { method: String, path: String, problem: String },
    #[error("GitLab answered {status} to {method} {path}: {message}")]
    Status { status: u16, method: String, path: String, message: String, retry_after: Option<Duration> },
    #[error("GitLab's answer to {method} {path} could not be read: {detail}")]
    Decode { method: String, path: String, detail: String },
    /// GitLab carried out something other than what was asked (§11: a group variable's `PUT`
    /// can land in another environment scope).
    #[error("GitLab's answer to {method} {path} shows it did something else: {detail}")]
    Unexpected { method: String, path: String, detail: String },
}

impl GitlabError {
    pub fn status(&self) -> Option<u16> {
        match self {
            GitlabError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Worth retrying an idempotent request for: no answer, 5xx, or 429.
    pub fn is_transient(&self) -> bool {
        match self {
            GitlabError::Transport { .. } => true,
            GitlabError::Status { status, .. } => *status >= 500 || *status == 429,
            GitlabError::Unreachable { .. } | GitlabError::Decode { .. } | GitlabError::Unexpected { .. } => false,
        }
    }

    /// GitLab's own text for the error (for matching known messages).
    pub fn message(&self) -> &str {
        match self {
            GitlabError::Status { message, .. } => message,
            GitlabError::Unreachable { problem, .. } => problem,
            GitlabError::Transport { detail, .. }
            | GitlabError::Decode { detail, .. }
            | GitlabError::Unexpected { detail, .. } => detail,
        }
    }

    /// Whether a write may have happened although no success was seen: no answer, a 5xx (a
    /// proxy's, or GitLab's after it committed), or a success whose body could not be read (it
    /// was cut short: GitLab committed, §11 "truncated answer").
    pub fn outcome_unknown(&self) -> bool {
        // `Unreachable`: no connection, so nothing was sent.
        matches!(self, GitlabError::Transport { .. } | GitlabError::Decode { .. })
            || self.status().is_some_and(|s| s >= 500)
    }
}

/// How hard to retry idempotent requests.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// No retry starts after this much time since the first attempt.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            budget: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long one request may take.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Extra CA certificates (PEM) to trust besides the system's.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions { timeout: Duration::from_secs(30), retry: RetryPolicy::default(), concurrency: 8, ca_file: None }
    }
}

/// What GitLab's `RateLimit-*` headers last said (§5.3).
#[derive(Debug, Default)]
struct Pace {
    remaining: Option<u64>,
    /// Unix time at which the window resets.
    reset: Option<u64>,
}

/// Why a credential could not be sent at all.
const UNSENDABLE: &str = "the credential has characters an HTTP header cannot carry";

/// A GitLab API client bound to one API root and one credential.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    credential: Secret,
    permits: Arc<Semaphore>,
    pace: Arc<std::sync::Mutex<Pace>>,
    /// Whether GitLab has answered this client at least once: until it has, a name that does not
    /// resolve or a port where nothing listens means the URL is wrong, and is not retried.
    answered: Arc<std::sync::atomic::AtomicBool>,
    options: ClientOptions,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).field("credential", &self.credential).finish()
    }
}

/// An answer that arrived, successful or not.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: bytes::Bytes,
}

/// Everything but RFC 3986's unreserved characters is encoded, `/` included.
const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Percent-encodes a project or group path (or a variable key) as one path segment, as GitLab
/// wants for `:id` (`group%2Fsubgroup`).
pub fn encode(path: &str) -> String {
    percent_encoding::utf8_percent_encode(path, SEGMENT).to_string()
}

impl Client {
    pub fn new(base: &str, credential: Secret, options: ClientOptions) -> Result<Client, GitlabError> {
        let mut builder = reqwest::Client::builder();
        if let Some(path) = &options.ca_file {
            let certs = read_ca_file(path).map_err(|detail| GitlabError::Transport {
                method: "-".into(),
                path: base.into(),
                detail,
            })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if !reqwest::Url::parse(base).is_ok_and(|u| u.scheme() == "https") {
            // Plain http (loopback only, see app::gitlab_url) needs no trust store: skip loading
            // the system's certificates, the bulk of start-up time. And no proxy: reqwest would
            // send a plain-http request to `HTTP_PROXY` or `ALL_PROXY` (it has no exception for
            // loopback), the credential in clear, across the network. Over https a proxy only
            // tunnels (`CONNECT`), so `HTTPS_PROXY` stays in use.
            builder = builder.tls_built_in_root_certs(false).no_proxy();
        }
        let http = builder
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(CONNECT_TIMEOUT))
            // Never follow a redirect: the credential must not reach another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("patrol/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GitlabError::Transport { method: "-".into(), path: base.into(), detail: e.to_string() })?;
        let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
        let pace = Arc::new(std::sync::Mutex::new(Pace::default()));
        let answered = Arc::new(std::sync::atomic::AtomicBool::new(false));
        Ok(Client { http, base: base.trim_end_matches('/').to_owned(), credential, permits, pace, answered, options })
    }

    /// The same client (connection pool, request slots, rate-limit pacing) acting as another
    /// token: after a self-rotation the old credential is revoked and the new one carries on.
    pub fn with_credential(&self, credential: Secret) -> Client {
        Client { credential, ..self.clone() }
    }

    /// The token this client acts as.
    pub fn credential(&self) -> &Secret {
        &self.credential
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// One attempt, authenticated with `credential`.
    async fn once(
        &self,
        credential: &Secret,
        method: &Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Answer, GitlabError> {
        let _permit = self.permits.acquire().await.map_err(|e| self.transport(method, path, e))?;
        self.paced().await;
        let mut auth =
            HeaderValue::from_str(credential.expose()).map_err(|_| self.transport(method, path, UNSENDABLE))?;
        auth.set_sensitive(true);
        let mut req = self.http.request(method.clone(), format!("{}{path}", self.base)).header("PRIVATE-TOKEN", auth);
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let started = Instant::now();
        let mut resp = req.send().await.map_err(|e| self.failed(method, path, &e))?;
        self.answered.store(true, std::sync::atomic::Ordering::Relaxed);
        let status = resp.status();
        let headers = resp.headers().clone();
        self.observe_rate_limit(&headers);
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY {
                        return Err(GitlabError::Decode {
                            method: method.to_string(),
                            path: path.into(),
                            detail: format!("the answer is larger than {} MiB", MAX_BODY / 1024 / 1024),
                        });
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(self.transport(method, path, describe(&e, self.options.timeout))),
            }
        }
        tracing::debug!(%method, path, status = status.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "gitlab request");
        Ok(Answer { status, headers, body: body.into() })
    }

    /// Waits for the rate-limit window to reset when GitLab says fewer requests remain in it than
    /// patrol may have in flight, so the throttle is never tripped (§5.3). A request sent while
    /// more than `concurrency` remain cannot exceed the limit, whatever else is in flight.
    async fn paced(&self) {
        loop {
            let wait = {
                let pace = self.pace.lock().unwrap_or_else(|e| e.into_inner());
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                match (pace.remaining, pace.reset) {
                    (Some(left), Some(reset)) if left <= self.options.concurrency as u64 && reset > now.as_secs() => {
                        Some(Duration::from_secs(reset).saturating_sub(now) + Duration::from_millis(20))
                    }
                    _ => None,
                }
            };
            match wait {
                Some(w) => {
                    tracing::debug!(
                        wait_ms = w.as_millis() as u64,
                        "pacing: GitLab's rate-limit window is nearly used up"
                    );
                    tokio::time::sleep(w).await;
                    let mut pace = self.pace.lock().unwrap_or_else(|e| e.into_inner());
                    pace.remaining = None;
                }
                None => return,
            }
        }
    }

    fn observe_rate_limit(&self, headers: &HeaderMap) {
        let number =
            |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).and_then(|s| s.trim().parse::<u64>().ok());
        if let (Some(remaining), Some(reset)) = (number("ratelimit-remaining"), number("ratelimit-reset")) {
            let mut pace = self.pace.lock().unwrap_or_else(|e| e.into_inner());
            // Answers arrive out of order; within a window the lowest count is the latest.
            let same_window = pace.reset == Some(reset);
            pace.remaining =
                Some(if same_window { pace.remaining.map_or(remaining, |r| r.min(remaining)) } else { remaining });
            pace.reset = Some(reset);
        }
    }

    fn transport(&self, method: &Method, path: &str, detail: impl std::fmt::Display) -> GitlabError {
        GitlabError::Transport { method: method.to_string(), path: path.into(), detail: detail.to_string() }
    }

    /// A request that got no answer: `Unreachable` when no connection could be made and trying
    /// again will not make one (see [`permanent`]), else `Transport`, which is retried.
    fn failed(&self, method: &Method, path: &str, e: &reqwest::Error) -> GitlabError {
        let url = url::Url::parse(&self.base).ok();
        let host = url.as_ref().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default();
        let port = url.as_ref().and_then(url::Url::port_or_known_default).unwrap_or(443);
        let answered = self.answered.load(std::sync::atomic::Ordering::Relaxed);
        match permanent(e, &host, port, answered) {
            Some(problem) => GitlabError::Unreachable { method: method.to_string(), path: path.into(), problem },
            None => self.transport(method, path, describe(e, self.options.timeout)),
        }
    }

    /// Sends a request; retries it per the policy when it is idempotent (not `POST`). A 429 is
    /// retried whatever the method: GitLab's throttle answers it before the request reaches the
    /// application (§5.3), so even a `POST` was not carried out and may be sent again.
    async fn request(
        &self,
        credential: Option<&Secret>,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Answer, GitlabError> {
        let retry = method != Method::POST;
        self.request_with(credential, method, path, query, body, retry).await
    }

    /// A request that is sent again after a transient failure only when `retry` (a 429 always
    /// is: GitLab's throttle answered before the application). Without it, an answer lost is the
    /// caller's to settle: a `DELETE` sent twice can have the first one land after the second
    /// and delete what was created in between (§12).
    async fn request_with(
        &self,
        credential: Option<&Secret>,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        retry: bool,
    ) -> Result<Answer, GitlabError> {
        let credential = credential.unwrap_or(&self.credential);
        let policy = self.options.retry;
        let started = Instant::now();
        let mut delay = policy.first_delay;
        let mut attempt = 1;
        loop {
            let result = self.once(credential, &method, path, query, body).await.and_then(|a| {
                // The secrets this request carries, for GitLab's error text: an echo of one is
                // removed whatever its shape.
                let value = body.and_then(|b| b.get("value")).and_then(Value::as_str);
                // The token information API carries the value it asks about as `token` (§14).
                let asked = body.and_then(|b| b.get("token")).and_then(Value::as_str);
                let known = [Some(credential.expose()), Some(self.credential.expose()), value, asked];
                check(&method, path, a, &known.into_iter().flatten().collect::<Vec<_>>())
            });
            match result {
                Err(e) if (retry && e.is_transient() || e.status() == Some(429)) && attempt < policy.attempts => {
                    let wait = match &e {
                        GitlabError::Status { retry_after: Some(ra), .. } => *ra,
                        _ => delay,
                    };
                    if started.elapsed() + wait > policy.budget {
                        return Err(e);
                    }
                    let error = match &e {
                        GitlabError::Status { status, message, .. } => format!("{status} {message}"),
                        other => other.message().to_owned(),
                    };
                    tracing::warn!(%method, path, attempt, wait_ms = wait.as_millis() as u64, error, "retrying");
                    tokio::time::sleep(wait).await;
                    delay = (delay * 2).min(policy.max_delay);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        credential: Option<&Secret>,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<T, GitlabError> {
        let answer = self.request(credential, method.clone(), path, query, body).await?;
        decode(&method, path, &answer.body)
    }

    /// Every page of a list, 100 per page (§5.2). When GitLab gives `X-Total-Pages`, the other
    /// pages are fetched at once (within the concurrency limit); past 10,000 records GitLab leaves
    /// the totals out, and the pages are followed one by one by `X-Next-Page`.
    async fn all<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<Vec<T>, GitlabError> {
        let mut items = Vec::new();
        self.each_page(path, query, |page| {
            items.extend(page);
            true
        })
        .await?;
        Ok(items)
    }

    /// Every page of a listing, handed to `sink` as it arrives (in page order), so that a caller can
    /// start work on the first records while later pages are still on their way. `sink` returns
    /// false to stop early.
    pub(crate) async fn each_page<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        mut sink: impl FnMut(Vec<T>) -> bool,
    ) -> Result<(), GitlabError> {
        let page = |n: u64| {
            let mut q = query.to_vec();
            q.push(("per_page", "100".into()));
            q.push(("page", n.to_string()));
            async move {
                let answer = self.request(None, Method::GET, path, &q, None).await?;
                let items: Vec<T> = decode(&Method::GET, path, &answer.body)?;
                let header = |name: &str| {
                    answer.headers.get(name).and_then(|v| v.to_str().ok()).and_then(|s| s.parse::<u64>().ok())
                };
                Ok::<_, GitlabError>((items, header("x-total-pages"), header("x-next-page")))
            }
        };
        let (first, total_pages, mut next) = page(1).await?;
        let full = first.len() >= 100;
        if !sink(first) || !full {
            return Ok(());
        }
        if let Some(total) = total_pages.filter(|t| *t > 1) {
            let mut rest = futures::stream::iter(2..=total).map(page).buffered(self.options.concurrency.max(1));
            while let Some(result) = rest.next().await {
                if !sink(result?.0) {
                    return Ok(());
                }
            }
            return Ok(());
        }
        // No totals: fetch the next `concurrency` pages at once, in order, until a short page.
        let batch = self.options.concurrency.max(1) as u64;
        let mut current = 1;
        while next.is_some_and(|n| n > current) {
            let mut pages = futures::stream::iter(current + 1..=current + batch).map(page).buffered(batch as usize);
            while let Some(result) = pages.next().await {
                let (more, _, after) = result?;
                let full = more.len() == 100;
                current += 1;
                next = after;
                if !sink(more) || !full || next.is_none() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// What was wrong with a server certificate, from rustls's error text, in plain words.
fn certificate_problem(detail: &str) -> Option<&'static str> {
    let d = detail.to_ascii_lowercase().replace(['_', ' '], "");
    if !d.contains("certificate") {
        return None;
    }
    Some(if d.contains("unknownissuer") {
        "it is signed by a certificate authority patrol does not trust"
    } else if d.contains("notvalidforname") {
        "it was not issued for this host name"
    } else if d.contains("expired") {
        "it has expired"
    } else if d.contains("notvalidyet") {
        "it is not valid yet (check the clocks)"
    } else if d.contains("revoked") {
        "it has been revoked"
    } else {
        "it could not be verified"
    })
}

/// Reads a PEM bundle of CA certificates to trust besides the system's.
pub fn read_ca_file(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("CA file {} is not a PEM bundle: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "CA file {} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The error and its causes, outermost first.
fn chain(e: &reqwest::Error) -> Vec<&(dyn std::error::Error + 'static)> {
    let mut all: Vec<&(dyn std::error::Error + 'static)> = vec![e];
    while let Some(next) = all.last().and_then(|x| x.source()) {
        all.push(next);
    }
    all
}

/// Why no connection to `host` can be made, when trying again will not help, in words that say
/// what to do; `None` for what may pass (a timeout, a reset, a name server that did not answer).
///
/// - A TLS certificate that is refused (untrusted issuer, another host's name, expired): always;
///   it will not change within a run.
/// - A host name that does not exist, or a port where nothing listens (connection refused): only
///   while GitLab has not answered this client yet. Before the first answer they mean the URL is
///   wrong, and nothing has been changed; once GitLab has answered, they are a restart or a DNS
///   hiccup in the middle of a run, and retrying is what saves the run.
fn permanent(e: &reqwest::Error, host: &str, port: u16, answered: bool) -> Option<String> {
    let causes = chain(e);
    let texts: Vec<String> = causes.iter().map(ToString::to_string).collect();
    let all = texts.join(": ");
    let innermost = texts.last().cloned().unwrap_or_default();
    if let Some(why) = certificate_problem(&all) {
        return Some(format!(
            "the TLS certificate of {host} was rejected: {why}. If your GitLab uses a private certificate authority, point `ca_file` in [gitlab] (or CI_SERVER_TLS_CA_FILE, which GitLab CI sets) at its PEM bundle; if the name does not match, use the host name the certificate was issued for ({innermost})"
        ));
    }
    if answered {
        return None;
    }
    let lower = all.to_ascii_lowercase();
    if lower.contains("dns error") {
        // EAI_AGAIN: the name server did not answer; that may pass.
        if lower.contains("temporary failure") || lower.contains("try again") {
            return None;
        }
        let why = innermost.trim_start_matches("failed to lookup address information: ");
        return Some(format!(
            "the host name {host} does not resolve ({why}). Check the GitLab URL (--gitlab-url, PATROL_GITLAB_URL, CI_API_V4_URL, CI_SERVER_URL or [gitlab] url)"
        ));
    }
    let refused = causes.iter().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    }) || lower.contains("connection refused");
    if refused {
        return Some(format!(
            "nothing accepts connections on {host} port {port} (connection refused). Check the host and port of the GitLab URL (--gitlab-url, PATROL_GITLAB_URL, CI_API_V4_URL, CI_SERVER_URL or [gitlab] url), and that GitLab is up"
        ));
    }
    None
}

/// `30s`, `500ms`: as `--timeout` takes it.
fn shown(d: Duration) -> String {
    match d.as_millis() {
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// A failure that may pass, briefly: the causes without reqwest's and hyper's wrappers (which
/// repeat the URL, or say only "client error").
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() && e.is_connect() {
        return format!("could not connect within {}", shown(timeout.min(CONNECT_TIMEOUT)));
    }
    if e.is_timeout() {
        return format!("no answer within {} (--timeout, PATROL_TIMEOUT)", shown(timeout));
    }
    let causes: Vec<String> = chain(e)
        .iter()
        .skip(1)
        .map(ToString::to_string)
        .filter(|t| !t.starts_with("client error (") && !t.is_empty())
        .collect();
    if causes.is_empty() {
        e.to_string()
    } else {
        causes.join(": ")
    }
}

/// Turns a non-2xx answer into an error carrying GitLab's message (never a request body), with
/// the secrets in `known` and every token-shaped word redacted: GitLab or a proxy may echo one.
fn check(method: &Method, path: &str, answer: Answer, known: &[&str]) -> Result<Answer, GitlabError> {
    if answer.status.is_success() {
        return Ok(answer);
    }
    let status = answer.status.as_u16();
    let retry_after = answer
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let message = if answer.status.is_redirection() {
        let to = answer.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or("?");
        redact_known(
            &format!("a redirect to {to}, which patrol does not follow (the credential stays with the configured host); check the GitLab URL"),
            known,
        )
    } else {
        error_text(&answer.body, known)
    };
    Err(GitlabError::Status { status, method: method.to_string(), path: path.into(), message, retry_after })
}

/// GitLab's error text from any of its body shapes (§5.4), or the start of a non-JSON body;
/// at most 200 characters, whatever the body. Secrets are redacted ([`redact_known`]) before
/// the cut, so that one the cut falls in is not left half-shown.
fn error_text(body: &[u8], known: &[&str]) -> String {
    truncate(&redact_known(&full_error_text(body), known))
}

fn full_error_text(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => {
            let flatten = |m: &Value| match m {
                Value::String(s) => s.clone(),
                Value::Object(o) => o
                    .iter()
                    .map(|(k, v)| {
                        let msgs =
                            v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "));
                        format!("{k} {}", msgs.unwrap_or_else(|| v.to_string()))
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
                other => other.to_string(),
            };
            match (v.get("message"), v.get("error"), v.get("error_description")) {
                (Some(m), _, _) => flatten(m),
                (None, Some(e), Some(d)) => format!("{}: {}", flatten(e), flatten(d)),
                (None, Some(e), None) => flatten(e),
                // Written again rather than as it came: the JSON escapes a body may use
                // (`glpat\u002d…`) are gone, so redaction sees every token as it is.
                _ => v.to_string(),
            }
        }
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            if text.trim_start().starts_with('<') {
                "an HTML page instead of GitLab's JSON (a proxy or login page?)".into()
            } else {
                text.trim().to_owned()
            }
        }
    }
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 200 {
        format!("{}…", s.chars().take(200).collect::<String>())
    } else {
        s.to_owned()
    }
}

fn decode<T: DeserializeOwned>(method: &Method, path: &str, body: &[u8]) -> Result<T, GitlabError> {
    serde_json::from_slice(body).map_err(|e| GitlabError::Decode {
        method: method.to_string(),
        path: path.into(),
        // serde's message names the field and position, never the value.
        detail: format!("{} (expected GitLab's JSON)", e.classify_name()),
    })
}

trait Classify {
    fn classify_name(&self) -> String;
}

impl Classify for serde_json::Error {
    fn classify_name(&self) -> String {
        let kind = match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "unexpected shape",
            serde_json::error::Category::Eof => "truncated",
        };
        format!("{kind} at line {} column {}", self.line(), self.column())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every type that holds a secret redacts it in `Debug` (plain and pretty).
    #[test]
    fn debug_of_every_secret_holding_type_redacts_it() {
        use super::model::{ApiVariable, IssuedToken};
        use rand::distr::{Alphanumeric, SampleString};
        for _ in 0..50 {
            let secret = format!("glpat-{}", Alphanumeric.sample_string(&mut rand::rng(), 20));
            let client =
                Client::new("http://127.0.0.1:1/api/v4", Secret::new(secret.clone()), ClientOptions::default())
                    .unwrap_or_else(|e| panic!("{e}"));
            let issued: IssuedToken = serde_json::from_value(serde_json::json!({
                "id": 1, "name": "n", "revoked": false, "active": true, "scopes": ["api"], "token": secret
            }))
            .unwrap_or_else(|e| panic!("{e}"));
            let variable: ApiVariable = serde_json::from_value(serde_json::json!({
                "key": "K", "value": secret, "protected": false, "masked": true, "hidden": false, "raw": false,
                "environment_scope": "*", "variable_type": "env_var"
            }))
            .unwrap_or_else(|e| panic!("{e}"));
            assert!(issued.secret.same_as(&secret) && variable.value.as_ref().is_some_and(|v| v.same_as(&secret)));
            let shown = format!(
                "{client:?} {client:#?} {issued:?} {issued:#?} {variable:?} {variable:#?} {:?}",
                client.with_credential(Secret::new(secret.clone()))
            );
            assert!(!shown.contains(&secret[6..]), "{shown}");
            assert!(shown.contains("REDACTED"));
        }
    }

    #[test]
    fn error_text_reads_every_gitlab_shape() {
        assert_eq!(error_text(br#"{"message":"404 Variable Not Found"}"#, &[]), "404 Variable Not Found");
        assert_eq!(error_text(br#"{"message":{"value":["is invalid"]}}"#, &[]), "value is invalid");
        assert_eq!(
            error_text(br#"{"error":"invalid_token","error_description":"Token was revoked."}"#, &[]),
            "invalid_token: Token was revoked."
        );
        assert_eq!(error_text(b"Retry later\n", &[]), "Retry later");
        assert!(error_text(b"<html><body>502</body></html>", &[]).contains("HTML"));
    }

    #[test]
    fn error_texts_never_show_a_token() {
        assert_eq!(
            error_text(br#"{"message":"token glpat-abcdefghij0123456789 is invalid"}"#, &[]),
            "token glpat-[REDACTED] is invalid"
        );
        // Each prefix, in each of GitLab's shapes and as plain text.
        for prefix in crate::secret::TOKEN_PREFIXES {
            let token = format!("{prefix}AbCdEfGhIj0123456789");
            let shown = format!("{prefix}[REDACTED]");
            for body in [
                serde_json::json!({ "message": format!("{token} is invalid") }).to_string(),
                serde_json::json!({ "message": { "value": [format!("{token} is invalid")] } }).to_string(),
                serde_json::json!({ "error": "invalid_token", "error_description": format!("{token} was revoked") })
                    .to_string(),
                serde_json::json!({ "detail": token }).to_string(),
                format!("Bad request: {token}\n"),
            ] {
                let text = error_text(body.as_bytes(), &[]);
                assert!(text.contains(&shown) && !text.contains("AbCdEfGhIj"), "{body}: {text}");
            }
        }
        // A JSON escape does not hide one.
        let escaped = error_text(br#"{"detail":"glpat\u002dabcdefghij0123456789"}"#, &[]);
        assert_eq!(escaped, r#"{"detail":"glpat-[REDACTED]"}"#);
        // The secrets the request carried, whatever their shape.
        let custom = "acme_Zq3xY9pLm2Kd8Vn4Rt6W";
        let body = format!(r#"{{"message":"{custom} may not be used"}}"#);
        assert_eq!(error_text(body.as_bytes(), &[custom]), "[REDACTED] may not be used");
    }

    #[test]
    fn a_token_at_the_cut_is_not_half_shown() {
        let token = "glpat-abcdefghij0123456789";
        let secret = "acme_Zq3xY9pLm2Kd8Vn4Rt6W";
        // The cut (200 characters) falls at each place in the token, and in a known secret.
        for lead in 170..200 {
            for (what, known, shown) in [(token, vec![], "glpat-[REDACTED]"), (secret, vec![secret], "[REDACTED]")] {
                let body = format!(r#"{{"message":"{}{what} is invalid"}}"#, "x".repeat(lead));
                let whole = format!("{}{shown} is invalid", "x".repeat(lead));
                let expected = if whole.len() > 200 { format!("{}…", &whole[..200]) } else { whole };
                assert_eq!(error_text(body.as_bytes(), &known), expected, "lead {lead}");
            }
        }
    }

    /// A redirect's target is GitLab's (or a proxy's) text too.
    #[test]
    fn a_redirect_target_is_redacted() {
        let answer = Answer {
            status: StatusCode::FOUND,
            headers: [(
                reqwest::header::LOCATION,
                HeaderValue::from_static("https://sso.example/login?t=glpat-abcdefghij0123456789"),
            )]
            .into_iter()
            .collect(),
            body: bytes::Bytes::new(),
        };
        let e = check(&Method::GET, "/x", answer, &[]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("login?t=glpat-[REDACTED], which patrol does not follow"), "{e}");
    }

    /// The error reqwest gives for a request to `url`.
    async fn failure(url: &str) -> reqwest::Error {
        let http = reqwest::Client::builder().no_proxy().build().unwrap_or_else(|e| panic!("{e}"));
        match http.get(url).send().await {
            Ok(r) => panic!("{url} answered {}", r.status()),
            Err(e) => e,
        }
    }

    /// A closed port or an unknown name means a wrong URL until GitLab has answered; after that,
    /// a restart or a DNS hiccup, which a retry may outlast.
    #[tokio::test]
    async fn refused_and_unresolvable_are_permanent_until_gitlab_has_answered() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        let refused = failure(&format!("http://127.0.0.1:{port}/")).await;
        let said = permanent(&refused, "127.0.0.1", port, false).unwrap_or_default();
        assert!(said.contains(&format!("127.0.0.1 port {port} (connection refused)")), "{said}");
        assert_eq!(permanent(&refused, "127.0.0.1", port, true), None);
        let brief = describe(&refused, Duration::from_secs(1));
        assert!(!brief.contains("error sending request") && !brief.contains("client error ("), "{brief}");
        assert!(brief.to_lowercase().contains("refused"), "{brief}");

        let unknown = failure("http://gitlab.invalid/").await;
        if describe(&unknown, Duration::from_secs(1)).contains("Temporary failure") {
            // No name server to ask here: that may pass, so it is retried.
            assert_eq!(permanent(&unknown, "gitlab.invalid", 80, false), None);
        } else {
            let said = permanent(&unknown, "gitlab.invalid", 80, false).unwrap_or_default();
            assert!(said.starts_with("the host name gitlab.invalid does not resolve"), "{said}");
            assert_eq!(permanent(&unknown, "gitlab.invalid", 80, true), None);
        }
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let dir = std::env::temp_dir().join(format!("patrol-ca-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let empty = dir.join("empty.pem");
        let _ = std::fs::write(&empty, "# nothing here\n");
        let said = read_ca_file(&empty).err().unwrap_or_default();
        assert!(said.contains("holds no certificate") && said.contains("empty.pem"), "{said}");
        let said = read_ca_file(&dir.join("missing.pem")).err().unwrap_or_default();
        assert!(said.starts_with("cannot read CA file") && said.contains("missing.pem"), "{said}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn paths_are_encoded_as_one_segment() {
        assert_eq!(encode("group/sub group/proj.x_y-z"), "group%2Fsub%20group%2Fproj.x_y-z");
    }
}

/// Property: no answer makes decoding panic. GitLab's documented bodies, mutated (cut short,
/// bytes flipped, types swapped), must each decode or give a `Decode` error naming the request.
#[cfg(test)]
mod fuzz {
    use super::model::{ApiPipeline, ApiToken, ApiUser, ApiVariable, IssuedToken};
    use super::*;
    use crate::config::fuzz::{mutate, Rng};

    const BODIES: &[&str] = &[
        include_str!("../../tests/fixtures/list_project_access_tokens.json"),
        include_str!("../../tests/fixtures/rotate_project_access_token.json"),
        include_str!("../../tests/fixtures/create_project_variable.json"),
        include_str!("../../tests/fixtures/list_project_pipelines.json"),
        include_str!("../../tests/fixtures/list_personal_access_tokens.json"),
        include_str!("../../tests/fixtures/error_400_validation.json"),
    ];

    fn all_shapes(body: &[u8]) -> usize {
        let m = Method::GET;
        [
            decode::<Vec<ApiToken>>(&m, "/x", body).is_ok(),
            decode::<IssuedToken>(&m, "/x", body).is_ok(),
            decode::<ApiVariable>(&m, "/x", body).is_ok(),
            decode::<Vec<ApiPipeline>>(&m, "/x", body).is_ok(),
            decode::<Vec<ApiUser>>(&m, "/x", body).is_ok(),
        ]
        .into_iter()
        .filter(|ok| *ok)
        .count()
    }

    #[test]
    fn no_answer_panics_the_decoder() {
        let originals: usize = BODIES.iter().map(|b| all_shapes(b.as_bytes())).sum();
        assert!(originals >= 4, "the documented bodies decode ({originals})");
        let mut rng = Rng::new(0xdec0de);
        let (mut decoded, mut refused) = (0, 0);
        for i in 0..6000 {
            let body = mutate(&mut rng, BODIES[i % BODIES.len()].as_bytes());
            let n = all_shapes(&body);
            decoded += n;
            refused += 5 - n;
            // Error texts are built from any body too.
            let text = error_text(&body, &[]);
            assert!(text.chars().count() <= 201, "case {i}: an unbounded error text");
            let e = decode::<Vec<ApiToken>>(&Method::GET, "/projects/1/access_tokens", &body);
            if let Err(GitlabError::Decode { path, detail, .. }) = e {
                assert_eq!(path, "/projects/1/access_tokens");
                assert!(detail.contains("line"), "case {i}: {detail}");
            }
        }
        println!("answer decoding: 6000 mutated answers x 5 shapes, {decoded} decoded, {refused} refused");
        assert!(decoded > 0 && refused > 0);
    }
}
