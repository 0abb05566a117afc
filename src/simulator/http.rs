//! The simulator's HTTP layer: parsing requests the way GitLab's Grape API does, shaping
//! answers, pagination (§5.2), rate limiting (§5.3), and applying injected faults.

use super::api;
use super::faults::{FaultAction, FaultSet, Identity};
use super::world::{RequestRecord, World};
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Map, Value};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Bodies larger than this are refused, as a proxy in front of GitLab would.
const MAX_BODY: usize = 10 * 1024 * 1024;

/// Everything the server shares between connections.
pub struct Shared {
    pub world: Mutex<World>,
    pub faults: Mutex<FaultSet>,
    pub limiter: Mutex<RateLimiter>,
    /// `http://127.0.0.1:PORT`, for `Link` headers and web URLs.
    pub origin: String,
    /// How many requests were performed and then held without an answer (`CommitThenHang`).
    pub held: tokio::sync::watch::Sender<u32>,
    /// How many `CommitsLate` requests have been performed.
    pub late_commits: tokio::sync::watch::Sender<u32>,
    /// How many requests `Gated` faults are holding or have held.
    pub gated: tokio::sync::watch::Sender<u32>,
    /// Whether the gate is open: held requests go on, later ones are not held.
    pub gate_open: tokio::sync::watch::Sender<bool>,
}

/// Locks a mutex even if a handler panicked while holding it: the data is still usable for
/// inspection, and a test should see the panic, not a poisoned lock.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- requests ----------------------------------------------------------------------------

/// Request parameters merged from the query string and a JSON or form body. Parameters in a
/// body with another content type are ignored, as Rack does (gitlab-api.md §10).
#[derive(Debug, Default, Clone)]
pub struct Params(Map<String, Value>);

impl Params {
    pub fn parse(query: &str, content_type: Option<&str>, body: &[u8]) -> Result<Params, Reply> {
        let mut map = Map::new();
        add_form(&mut map, query.as_bytes());
        let ct = content_type.unwrap_or("").to_ascii_lowercase();
        if ct.starts_with("application/json") && !body.is_empty() {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(obj)) => {
                    for (k, v) in obj {
                        // `{"filter": {"environment_scope": "x"}}` is the JSON form of `filter[…]`.
                        if let Value::Object(inner) = &v {
                            for (ik, iv) in inner {
                                map.insert(format!("{k}[{ik}]"), iv.clone());
                            }
                        }
                        map.insert(k, v);
                    }
                }
                Ok(_) | Err(_) => {
                    return Err(Reply::json(
                        400,
                        json!({"error": "The provided content-type 'application/json' is not supported or the body is malformed"}),
                    ))
                }
            }
        } else if ct.starts_with("application/x-www-form-urlencoded") {
            add_form(&mut map, body);
        }
        Ok(Params(map))
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// A string parameter; numbers and booleans are taken as their text.
    pub fn str(&self, key: &str) -> Option<String> {
        match self.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    pub fn required_str(&self, key: &str) -> Result<String, Reply> {
        self.str(key).ok_or_else(|| Reply::param_missing(key))
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, Reply> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            // What Grape's Boolean coercion (dry-types) accepts, in any case (§11).
            Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
                "true" | "t" | "1" | "yes" | "y" | "on" => Ok(Some(true)),
                "false" | "f" | "0" | "no" | "n" | "off" => Ok(Some(false)),
                _ => Err(Reply::param_invalid(key)),
            },
            Some(Value::Number(n)) => match n.as_u64() {
                Some(1) => Ok(Some(true)),
                Some(0) => Ok(Some(false)),
                _ => Err(Reply::param_invalid(key)),
            },
            Some(_) => Err(Reply::param_invalid(key)),
        }
    }

    pub fn date(&self, key: &str) -> Result<Option<NaiveDate>, Reply> {
        match self.str(key) {
            None => Ok(None),
            Some(s) => NaiveDate::parse_from_str(&s, "%Y-%m-%d").map(Some).map_err(|_| Reply::param_invalid(key)),
        }
    }

    pub fn datetime(&self, key: &str) -> Result<Option<DateTime<Utc>>, Reply> {
        match self.str(key) {
            None => Ok(None),
            Some(s) => DateTime::parse_from_rfc3339(&s)
                .map(|d| Some(d.with_timezone(&Utc)))
                .or_else(|_| {
                    NaiveDate::parse_from_str(&s, "%Y-%m-%d").map(|d| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()))
                })
                .map_err(|_| Reply::param_invalid(key)),
        }
    }

    pub fn i64(&self, key: &str) -> Result<Option<i64>, Reply> {
        match self.str(key) {
            None => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| Reply::param_invalid(key)),
        }
    }

    pub fn u64(&self, key: &str) -> Result<Option<u64>, Reply> {
        match self.str(key) {
            None => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| Reply::param_invalid(key)),
        }
    }

    /// An array parameter: a JSON array, repeated `key[]=` form fields, or one value.
    pub fn list(&self, key: &str) -> Result<Option<Vec<String>>, Reply> {
        let v = self.get(key).or_else(|| self.get(&format!("{key}[]")));
        match v {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned).ok_or_else(|| Reply::param_invalid(key)))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
            Some(_) => Err(Reply::param_invalid(key)),
        }
    }
}

fn add_form(map: &mut Map<String, Value>, bytes: &[u8]) {
    for (k, v) in form_urlencoded::parse(bytes) {
        let (k, v) = (k.into_owned(), v.into_owned());
        if k.ends_with("[]") {
            let entry = map.entry(k).or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(items) = entry {
                items.push(Value::String(v));
            }
        } else {
            map.insert(k, Value::String(v));
        }
    }
}

/// A parsed request, as handlers see it.
#[derive(Debug)]
pub struct Req {
    pub method: String,
    /// The raw path, percent-encoding kept (`/api/v4/projects/a%2Fb/variables`).
    pub path: String,
    /// Path segments after `/api/v4`, percent-decoded.
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
    pub params: Params,
    pub headers: HeaderMap,
}

impl Req {
    /// The credential, from `PRIVATE-TOKEN`, `Authorization: Bearer` or `private_token=` (§5.1).
    pub fn credential(&self) -> Option<String> {
        let header = |name: &str| self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        if let Some(t) = header("private-token") {
            return Some(t.to_owned());
        }
        if let Some(auth) = header("authorization") {
            if let Some(t) = auth.strip_prefix("Bearer ").or_else(|| auth.strip_prefix("bearer ")) {
                return Some(t.trim().to_owned());
            }
        }
        self.query.iter().find(|(k, _)| k == "private_token").map(|(_, v)| v.clone())
    }

    /// The query string without any `private_token`, for the request log.
    pub fn loggable_query(&self) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.query {
            if k == "private_token" {
                out.append_pair(k, "[REDACTED]");
            } else {
                out.append_pair(k, v);
            }
        }
        out.finish()
    }
}

// ---- replies -----------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub enum ReplyBody {
    Json(Value),
    Text(String),
    Empty,
}

/// An answer, successful or not. Handlers return `Err(Reply)` for GitLab's error answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: ReplyBody,
    pub headers: Vec<(String, String)>,
}

pub type ApiResult = Result<Reply, Reply>;

impl Reply {
    pub fn json(status: u16, body: Value) -> Reply {
        Reply { status, body: ReplyBody::Json(body), headers: Vec::new() }
    }

    pub fn no_content() -> Reply {
        Reply { status: 204, body: ReplyBody::Empty, headers: Vec::new() }
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// `{"message": "<text>"}`, GitLab's most common error shape (§5.4).
    pub fn message(status: u16, text: impl Into<String>) -> Reply {
        Reply::json(status, json!({ "message": text.into() }))
    }

    pub fn unauthorized() -> Reply {
        Reply::message(401, "401 Unauthorized")
    }

    pub fn forbidden() -> Reply {
        Reply::message(403, "403 Forbidden")
    }

    pub fn not_found(what: &str) -> Reply {
        Reply::message(404, format!("404 {what} Not Found"))
    }

    /// `bad_request!(reason)`.
    pub fn bad_request(reason: &str) -> Reply {
        Reply::message(400, format!("400 Bad request - {reason}"))
    }

    /// A model validation error: `{"message": {"<attr>": ["<msg>"]}}`.
    pub fn validation(attr: &str, msg: &str) -> Reply {
        Reply::json(400, json!({ "message": { attr: [msg] } }))
    }

    /// Grape's parameter errors: `{"error": "<param> is missing"}`.
    pub fn param_missing(param: &str) -> Reply {
        Reply::json(400, json!({ "error": format!("{param} is missing") }))
    }

    pub fn param_invalid(param: &str) -> Reply {
        Reply::json(400, json!({ "error": format!("{param} is invalid") }))
    }

    /// The body GitLab (or the proxy in front of it) sends for a bare status code.
    pub fn status_only(status: u16) -> Reply {
        let reason = StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error");
        Reply::message(status, format!("{status} {reason}"))
    }
}

// ---- pagination (§5.2) --------------------------------------------------------------------

/// Offset pagination with GitLab's headers: `page` (default 1), `per_page` (default 20, at
/// most 100), the `X-*` headers and `Link`. Totals are left out past 10,000 records.
pub fn paginate(origin: &str, req: &Req, items: Vec<Value>) -> ApiResult {
    paginate_map(origin, req, items, |v| v)
}

/// Like [`paginate`], turning only the items of the requested page into JSON.
pub fn paginate_map<T>(origin: &str, req: &Req, items: Vec<T>, to_json: impl Fn(T) -> Value) -> ApiResult {
    // `per_page=0` is refused by Grape's `except_values: [0]`, and a page or page size below 1
    // by `verify_pagination_params!` (§11); a page size above 100 is capped.
    let invalid = |param: &str| Reply::json(400, json!({ "error": format!("{param} does not have a valid value") }));
    let page = match req.params.i64("page")? {
        Some(p) if p < 1 => return Err(invalid("page")),
        p => p.unwrap_or(1) as u64,
    };
    let per_page = match req.params.i64("per_page")? {
        Some(0) => return Err(Reply::json(400, json!({"error": "per_page has a value not allowed"}))),
        Some(p) if p < 0 => return Err(invalid("per_page")),
        p => p.unwrap_or(20).min(100) as u64,
    };
    let total = items.len() as u64;
    let total_pages = total.div_ceil(per_page).max(1);
    let start = ((page - 1) * per_page) as usize;
    let body: Vec<Value> = items.into_iter().skip(start).take(per_page as usize).map(to_json).collect();
    let link = |p: u64| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in req.query.iter().filter(|(k, _)| k != "page" && k != "per_page" && k != "private_token") {
            q.append_pair(k, v);
        }
        q.append_pair("page", &p.to_string());
        q.append_pair("per_page", &per_page.to_string());
        format!("{origin}{}?{}", req.path, q.finish())
    };
    let counted = total <= 10_000;
    let mut links = Vec::new();
    let mut reply = Reply::json(200, Value::Array(body))
        .with_header("x-page", page.to_string())
        .with_header("x-per-page", per_page.to_string());
    let next = (page < total_pages).then_some(page + 1);
    let prev = (page > 1).then(|| (page - 1).min(total_pages));
    reply = reply
        .with_header("x-next-page", next.map(|p| p.to_string()).unwrap_or_default())
        .with_header("x-prev-page", prev.map(|p| p.to_string()).unwrap_or_default());
    if let Some(p) = prev {
        links.push(format!("<{}>; rel=\"prev\"", link(p)));
    }
    if let Some(n) = next {
        links.push(format!("<{}>; rel=\"next\"", link(n)));
    }
    links.push(format!("<{}>; rel=\"first\"", link(1)));
    if counted {
        links.push(format!("<{}>; rel=\"last\"", link(total_pages)));
        reply = reply.with_header("x-total", total.to_string()).with_header("x-total-pages", total_pages.to_string());
    }
    Ok(reply.with_header("link", links.join(", ")))
}

// ---- rate limiting (§5.3) -------------------------------------------------------------------

/// GitLab's authenticated-API throttle: a fixed window of one minute. When a limit is set,
/// every answer carries the `RateLimit-*` headers; past the limit requests get 429 with
/// `Retry-After` and the plain-text body `Retry later`. With no limit set (the Self-Managed
/// default) there are no headers, as from GitLab with the throttle off.
#[derive(Debug)]
pub struct RateLimiter {
    /// Requests allowed per window; `None`: no throttle.
    pub per_minute: Option<u32>,
    /// The window's length in seconds: 60 as in GitLab; tests shorten it.
    pub window_secs: i64,
    window: i64,
    observed: u32,
    /// How many requests were refused with 429 by the throttle.
    pub throttled: u64,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter { per_minute: None, window_secs: 60, window: 0, observed: 0, throttled: 0 }
    }
}

impl RateLimiter {
    /// Counts one request; returns the headers to send and, when over the limit, the 429.
    fn check(&mut self, now: DateTime<Utc>) -> (Vec<(String, String)>, Option<Reply>) {
        let Some(limit) = self.per_minute else { return (Vec::new(), None) };
        let length = self.window_secs.max(1);
        let window = now.timestamp().div_euclid(length);
        if window != self.window {
            self.window = window;
            self.observed = 0;
        }
        self.observed += 1;
        let reset = (window + 1) * length;
        let headers = vec![
            ("ratelimit-name".to_owned(), "throttle_authenticated_api".to_owned()),
            ("ratelimit-limit".to_owned(), limit.to_string()),
            ("ratelimit-observed".to_owned(), self.observed.to_string()),
            ("ratelimit-remaining".to_owned(), limit.saturating_sub(self.observed).to_string()),
            ("ratelimit-reset".to_owned(), reset.to_string()),
        ];
        if self.observed <= limit {
            return (headers, None);
        }
        self.throttled += 1;
        let retry_after = (reset - now.timestamp()).max(1);
        let reset_time = DateTime::<Utc>::from_timestamp(reset, 0)
            .map(|t| t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
            .unwrap_or_default();
        let reply = Reply { status: 429, body: ReplyBody::Text("Retry later\n".into()), headers: Vec::new() }
            .with_header("retry-after", retry_after.to_string())
            .with_header("ratelimit-resettime", reset_time);
        (headers, Some(reply))
    }
}

// ---- the request pipeline -------------------------------------------------------------------

/// Returned instead of a response when the connection must close without an answer.
#[derive(Debug)]
pub struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for DropConnection {}

pub async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, DropConnection> {
    let (parts, body) = request.into_parts();
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(to_response(Reply::status_only(413))),
    };
    let path = parts.uri.path().to_owned();
    let query_str = parts.uri.query().unwrap_or("");
    let content_type = parts.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let params = match Params::parse(query_str, content_type, &bytes) {
        Ok(p) => p,
        Err(reply) => return Ok(to_response(reply)),
    };
    let segments = path
        .strip_prefix("/api/v4")
        .unwrap_or("")
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let query = form_urlencoded::parse(query_str.as_bytes()).into_owned().collect();
    let req = Req { method: parts.method.as_str().to_owned(), path, segments, query, params, headers: parts.headers };

    let token_name = req.credential().and_then(|s| lock(&shared.world).token_by_secret(&s).map(|t| t.name.clone()));
    let key = req.params.str("key");
    let identity =
        Identity { method: &req.method, path: &req.path, token_name: token_name.as_deref(), key: key.as_deref() };
    let (latency, actions) = {
        let mut faults = lock(&shared.faults);
        (faults.latency, faults.take(&identity))
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut drop_after = false;
    let mut hold_after = false;
    let mut truncate = false;
    for action in &actions {
        let early = match action {
            FaultAction::Latency { millis } => {
                tokio::time::sleep(Duration::from_millis(*millis)).await;
                None
            }
            FaultAction::Gated => {
                let mut open = shared.gate_open.subscribe();
                shared.gated.send_modify(|n| *n += 1);
                let _ = open.wait_for(|open| *open).await;
                None
            }
            FaultAction::Status { status } => Some(Reply::status_only(*status)),
            FaultAction::RateLimited { retry_after_secs } => Some(
                Reply { status: 429, body: ReplyBody::Text("Retry later\n".into()), headers: Vec::new() }
                    .with_header("retry-after", retry_after_secs.to_string()),
            ),
            FaultAction::Respond { status, content_type, body, location } => {
                let mut reply = Reply { status: *status, body: ReplyBody::Text(body.clone()), headers: Vec::new() }
                    .with_header("content-type", content_type.clone());
                if let Some(to) = location {
                    reply = reply.with_header("location", to.clone());
                }
                Some(reply)
            }
            FaultAction::Oversized { bytes } => {
                let body = format!("[{}{{}}]", "{},".repeat(bytes.saturating_sub(4) / 3));
                Some(
                    Reply { status: 200, body: ReplyBody::Text(body), headers: Vec::new() }
                        .with_header("content-type", "application/json"),
                )
            }
            FaultAction::Hang => {
                record(&shared, &req, 0, None, Some(action));
                std::future::pending::<()>().await;
                None
            }
            FaultAction::DropAfterCommit => {
                drop_after = true;
                None
            }
            FaultAction::CommitThenHang => {
                hold_after = true;
                None
            }
            FaultAction::TruncatedAnswer => {
                truncate = true;
                None
            }
            FaultAction::CommitsLate { after_millis } => {
                commit_late(shared.clone(), req, *after_millis).await;
                return Err(DropConnection);
            }
        };
        if let Some(reply) = early {
            record(&shared, &req, reply.status, None, Some(action));
            return Ok(to_response(reply));
        }
    }

    let (reply, token_id) = {
        let mut world = lock(&shared.world);
        let now = world.clock.now();
        let (rate_headers, throttled) = lock(&shared.limiter).check(now);
        let (mut reply, token_id) = match throttled {
            Some(reply) => (reply, None),
            None => api::serve(&mut world, &shared.origin, &req),
        };
        reply.headers.extend(rate_headers);
        (reply, token_id)
    };
    if drop_after {
        record(&shared, &req, 0, token_id, Some(&FaultAction::DropAfterCommit));
        return Err(DropConnection);
    }
    if hold_after {
        record(&shared, &req, 0, token_id, Some(&FaultAction::CommitThenHang));
        shared.held.send_modify(|n| *n += 1);
        std::future::pending::<()>().await;
    }
    if truncate && (200..300).contains(&reply.status) {
        record(&shared, &req, reply.status, token_id, Some(&FaultAction::TruncatedAnswer));
        return Ok(to_response(truncated(reply)));
    }
    record(&shared, &req, reply.status, token_id, None);
    Ok(to_response(reply))
}

/// Performs the request `after_millis` after it arrived, in a task of its own so that the
/// client closing its connection does not stop it; the caller waits for it, then drops the
/// connection without an answer.
async fn commit_late(shared: Arc<Shared>, req: Req, after_millis: u64) {
    let task = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(after_millis)).await;
        let (reply, token_id) = api::serve(&mut lock(&shared.world), &shared.origin, &req);
        let fault = FaultAction::CommitsLate { after_millis };
        record(&shared, &req, reply.status, token_id, Some(&fault));
        shared.late_commits.send_modify(|n| *n += 1);
    });
    let _ = task.await;
}

/// The same answer with its body cut to half its length: no longer valid JSON.
fn truncated(reply: Reply) -> Reply {
    let text = match &reply.body {
        ReplyBody::Json(v) => v.to_string(),
        ReplyBody::Text(t) => t.clone(),
        ReplyBody::Empty => String::new(),
    };
    let cut: String = text.chars().take(text.chars().count() / 2).collect();
    Reply { status: reply.status, body: ReplyBody::Text(cut), headers: reply.headers }
        .with_header("content-type", "application/json")
}

fn record(shared: &Shared, req: &Req, status: u16, token_id: Option<u64>, fault: Option<&FaultAction>) {
    let token_name = req.credential().and_then(|s| lock(&shared.world).token_by_secret(&s).map(|t| t.name.clone()));
    let entry = RequestRecord {
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.loggable_query(),
        status,
        token_id,
        token_name,
        key: req.params.str("key"),
        fault: fault.map(|f| format!("{f:?}")),
    };
    lock(&shared.world).requests.push(entry);
}

fn to_response(reply: Reply) -> Response<Full<Bytes>> {
    let (bytes, content_type) = match reply.body {
        ReplyBody::Json(v) => (Bytes::from(v.to_string()), Some("application/json")),
        ReplyBody::Text(t) => (Bytes::from(t), Some("text/plain")),
        ReplyBody::Empty => (Bytes::new(), None),
    };
    let mut response = Response::new(Full::new(bytes));
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    if let Some(ct) = content_type {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    for (name, value) in reply.headers {
        if let (Ok(name), Ok(value)) =
            (hyper::header::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value))
        {
            if name == CONTENT_TYPE {
                headers.insert(name, value);
            } else {
                headers.append(name, value);
            }
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_arrays_and_filters_parse_like_grape() {
        let p = Params::parse(
            "filter%5Benvironment_scope%5D=prod",
            Some("application/x-www-form-urlencoded"),
            b"scopes[]=api&scopes[]=read_api&masked=true",
        )
        .unwrap_or_default();
        assert_eq!(p.str("filter[environment_scope]").as_deref(), Some("prod"));
        assert_eq!(p.list("scopes").ok().flatten(), Some(vec!["api".to_owned(), "read_api".to_owned()]));
        assert_eq!(p.bool("masked").ok().flatten(), Some(true));
    }

    #[test]
    fn json_body_without_content_type_is_ignored() {
        let p = Params::parse("", None, br#"{"expires_at":"2027-01-01"}"#).unwrap_or_default();
        assert!(p.str("expires_at").is_none());
    }

    #[test]
    fn rate_limiter_counts_a_fixed_minute_window() {
        let mut limiter = RateLimiter { per_minute: Some(2), ..Default::default() };
        let t = DateTime::<Utc>::from_timestamp(600, 0).unwrap_or_default();
        assert!(limiter.check(t).1.is_none());
        assert!(limiter.check(t).1.is_none());
        let (headers, refused) = limiter.check(t);
        let refused = refused.map(|r| r.status);
        assert_eq!(refused, Some(429));
        assert!(headers.contains(&("ratelimit-remaining".into(), "0".into())));
        assert!(limiter.check(t + chrono::Duration::seconds(60)).1.is_none());
    }
}
