//! A built-in GitLab REST API simulator, faithful to the facts in `gitlab-api.md` (kept in
//! `docs/gitlab-api.md`; sections are cited as §N throughout this module).
//!
//! It exists so that every test can talk to something that behaves like GitLab, including the
//! parts that make rotation dangerous: rotation revokes the old token at once (§1.4), reuse of a
//! revoked token on a rotate path revokes the whole token family (§1.5), and an answer can be
//! lost after the write was made ([`FaultAction::DropAfterCommit`]).
//!
//! Layout: [`world`] holds the state, [`seed`] builds it, [`http`] speaks HTTP (params,
//! pagination, rate limits, faults), `api` serves the endpoints, [`faults`] describes failures.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use patrol::simulator::{Seed, Simulator};
//! let sim = Simulator::start(Seed::demo()).await?;
//! println!("{}", sim.api_url()); // http://127.0.0.1:PORT/api/v4
//! # Ok(()) }
//! ```

mod api;
pub mod clock;
pub mod faults;
pub mod http;
pub mod seed;
pub mod world;

pub use faults::{Fault, FaultAction};
pub use seed::{Seed, DEMO_ADMIN_SECRET};
pub use world::World;

use http::{lock, RateLimiter, Shared};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("cannot serve TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Seed(#[from] seed::SeedError),
}

/// A running simulator. Dropping it stops the server.
pub struct Simulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Simulator {
    /// Starts on a random loopback port.
    pub async fn start(seed: Seed) -> Result<Simulator, SimulatorError> {
        Simulator::start_on("127.0.0.1:0", seed).await
    }

    pub async fn start_on(listen: &str, seed: Seed) -> Result<Simulator, SimulatorError> {
        Simulator::serve(listen, seed, None).await
    }

    /// Serves HTTPS with this certificate chain and key (PEM), as `https://localhost:PORT`: for
    /// testing patrol's trust settings (`ca_file`, `CI_SERVER_TLS_CA_FILE`).
    pub async fn start_tls(
        listen: &str,
        seed: Seed,
        cert_chain_pem: &str,
        key_pem: &str,
    ) -> Result<Simulator, SimulatorError> {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |e: &dyn std::fmt::Display| SimulatorError::Tls(e.to_string());
        let chain = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&e))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| bad(&e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(&e))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| bad(&e))?;
        Simulator::serve(listen, seed, Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn serve(
        listen: &str,
        seed: Seed,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Result<Simulator, SimulatorError> {
        let mut world = seed.build()?;
        let listener =
            TcpListener::bind(listen).await.map_err(|source| SimulatorError::Bind { addr: listen.into(), source })?;
        let addr = listener.local_addr().map_err(|source| SimulatorError::Bind { addr: listen.into(), source })?;
        let origin = match tls {
            Some(_) => format!("https://localhost:{}", addr.port()),
            None => format!("http://{addr}"),
        };
        // GitLab's `web_url` fields carry its external URL (§11): here, where it listens.
        world.settings.external_url = origin.clone();
        let shared = Arc::new(Shared {
            world: std::sync::Mutex::new(world),
            faults: std::sync::Mutex::new(faults::FaultSet::default()),
            limiter: std::sync::Mutex::new(RateLimiter::default()),
            origin,
            held: watch::channel(0).0,
            late_commits: watch::channel(0).0,
            gated: watch::channel(0).0,
            gate_open: watch::channel(false).0,
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, shared.clone(), stopped, tls));
        Ok(Simulator { addr, shared, stop, task: Some(task) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API root, `http://127.0.0.1:PORT/api/v4` (`https://localhost:PORT/api/v4` with TLS).
    pub fn api_url(&self) -> String {
        format!("{}/api/v4", self.shared.origin)
    }

    /// Reads or changes the simulated instance directly (tests' back door).
    pub fn with_world<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        f(&mut lock(&self.shared.world))
    }

    pub fn inject(&self, fault: Fault) {
        lock(&self.shared.faults).add(fault);
    }

    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Seeds the random choice of probabilistic faults.
    pub fn seed_faults(&self, seed: u64) {
        lock(&self.shared.faults).seed(seed);
    }

    /// Latency added to every request.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.shared.faults).latency = latency;
    }

    /// GitLab's authenticated-API throttle, per minute; `None` turns it off (§5.3).
    pub fn set_rate_limit(&self, per_minute: Option<u32>) {
        lock(&self.shared.limiter).per_minute = per_minute;
    }

    /// Shortens the throttle's window from GitLab's minute, so tests need not wait a minute.
    pub fn set_rate_limit_window(&self, seconds: i64) {
        lock(&self.shared.limiter).window_secs = seconds;
    }

    /// Waits until a `CommitThenHang` fault has performed a request and is holding its answer.
    pub async fn wait_held(&self) {
        self.wait_held_beyond(0).await;
    }

    /// How many requests `CommitThenHang` faults have performed and held so far.
    pub fn held(&self) -> u32 {
        *self.shared.held.borrow()
    }

    /// Waits until more than `n` requests have been held (a later run's, after `held()` was `n`).
    pub async fn wait_held_beyond(&self, n: u32) {
        let mut held = self.shared.held.subscribe();
        let _ = held.wait_for(|count| *count > n).await;
    }

    /// Waits until `n` requests held by `CommitsLate` faults have been performed.
    pub async fn wait_late_commits(&self, n: u32) {
        let mut done = self.shared.late_commits.subscribe();
        let _ = done.wait_for(|count| *count >= n).await;
    }

    /// Waits until `n` requests have met a `Gated` fault.
    pub async fn wait_gated(&self, n: u32) {
        let mut gated = self.shared.gated.subscribe();
        let _ = gated.wait_for(|count| *count >= n).await;
    }

    /// Lets every request a `Gated` fault holds, or will meet, go on.
    pub fn open_gate(&self) {
        self.shared.gate_open.send_replace(true);
    }

    /// How many requests the throttle refused with 429.
    pub fn throttled(&self) -> u64 {
        lock(&self.shared.limiter).throttled
    }

    /// Every request seen so far (never a secret).
    pub fn requests(&self) -> Vec<world::RequestRecord> {
        lock(&self.shared.world).requests.clone()
    }

    /// Every secret the simulator ever issued, seeded ones included.
    pub fn issued_secrets(&self) -> Vec<String> {
        lock(&self.shared.world).issued_secrets.clone()
    }

    /// Each time GitLab's reuse detection fired (§1.5). A correct client never causes one.
    pub fn reuse_detections(&self) -> Vec<world::ReuseDetection> {
        lock(&self.shared.world).reuse_detections.clone()
    }

    /// The secret of the first admin's active token, if there is one.
    pub fn admin_secret(&self) -> Option<String> {
        self.with_world(|w| {
            let today = w.today();
            let admins: Vec<_> = w.users.values().filter(|u| u.admin).map(|u| u.id).collect();
            w.tokens.values().find(|t| admins.contains(&t.user_id) && t.active(today)).map(|t| t.secret.clone())
        })
    }

    /// Stops accepting, ends every connection (hanging requests too) and waits for the server.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "simulator: accept failed");
                    continue;
                }
            },
            _ = stopped.changed() => return,
        };
        let shared = shared.clone();
        let stopped = stopped.clone();
        match &tls {
            None => {
                tokio::spawn(serve_connection(stream, shared, stopped));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that rejects the certificate ends the handshake; nothing to serve.
                    if let Ok(stream) = acceptor.accept(stream).await {
                        serve_connection(stream, shared, stopped).await;
                    }
                });
            }
        }
    }
}

async fn serve_connection<S>(stream: S, shared: Arc<Shared>, mut stopped: watch::Receiver<bool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| http::handle(shared.clone(), req));
    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = conn => {}
        _ = stopped.changed() => {}
    }
}
