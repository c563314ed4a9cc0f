//! An Ollama-compatible model-management API (`ollamafs serve`, `ollamafs mount --api`):
//! copy, list, delete, show, create and blob upload over the same engine as the mount.
//! Inference and registry endpoints answer 501: ollamafs manages models, Ollama runs them.
//!
//! The HTTP side is axum on a small tokio runtime; every store call runs on the blocking
//! pool, so a slow disk never stalls other requests.

pub mod catalog;
pub mod create;
pub mod models;
pub mod registry;

use std::future::Future;
use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, head, post};
use futures_util::StreamExt;

pub use catalog::{Catalog, StoreCatalog};

/// Largest JSON request body; blob uploads stream and have no limit but the disk.
pub const MAX_JSON_BODY: usize = 1 << 20;
/// How long a shutdown waits for requests in flight (an upload, say) before it stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// An error answer: a status and Ollama's `{"error": "..."}` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(m: impl Into<String>) -> ApiError {
        ApiError { status: 400, message: m.into() }
    }
    pub fn not_found(m: impl Into<String>) -> ApiError {
        ApiError { status: 404, message: m.into() }
    }
    pub fn internal(m: impl Into<String>) -> ApiError {
        ApiError { status: 500, message: m.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json(status, &serde_json::json!({ "error": self.message }))
    }
}

/// JSON the way gin sends it.
fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json; charset=utf-8")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

type Shared = Arc<dyn Catalog>;

/// Run store work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(ApiError::internal(format!("request failed: {e}"))))
}

pub fn router(catalog: Shared) -> Router {
    let mut r = Router::new()
        .route("/", get(|| async { "Ollama is running" }))
        .route("/api/version", get(version))
        .route("/api/tags", get(tags))
        .route("/api/ps", get(|| async { json(StatusCode::OK, &serde_json::json!({ "models": [] })) }))
        .route("/api/copy", post(copy))
        .route("/api/delete", axum::routing::delete(delete))
        .route("/api/show", post(show))
        .route("/api/create", post(create))
        .route("/api/pull", post(pull))
        .route("/api/push", post(push))
        .route("/api/blobs/{digest}", head(head_blob).post(upload_blob));
    for path in NOT_SERVED {
        r = r.route(path, any(not_served));
    }
    r.fallback(|| async { (StatusCode::NOT_FOUND, "404 page not found") })
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .with_state(catalog)
}

/// Ollama endpoints that need a model runner or a registry.
pub const NOT_SERVED: &[&str] = &[
    "/api/generate",
    "/api/chat",
    "/api/embed",
    "/api/embeddings",
    "/api/me",
    "/api/signin",
    "/api/signout",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/models",
    "/v1/models/{model}",
    "/v1/responses",
];

async fn not_served(uri: axum::http::Uri, body: Bytes) -> Response {
    // `ollama rm` first asks the server to unload the model. Nothing is ever loaded here,
    // so that request (keep_alive 0, no prompt) is trivially done.
    if matches!(uri.path(), "/api/generate" | "/api/chat")
        && let Some(model) = models::unload_request(&body)
    {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let mut v = serde_json::json!({ "model": model, "created_at": now, "done": true, "done_reason": "unload" });
        if uri.path() == "/api/chat" {
            v["message"] = serde_json::json!({ "role": "assistant", "content": "" });
        } else {
            v["response"] = serde_json::json!("");
        }
        return json(StatusCode::OK, &v);
    }
    let what = match uri.path() {
        "/api/me" | "/api/signin" | "/api/signout" => "sign in to ollama.com",
        _ => "run models",
    };
    ApiError {
        status: 501,
        message: format!(
            "{} is not served here: ollamafs manages the model store and does not {what}; \
             Ollama runs models (point this client at an Ollama server sharing the store)",
            uri.path()
        ),
    }
    .into_response()
}

async fn version() -> Response {
    json(StatusCode::OK, &serde_json::json!({ "version": OLLAMA_API_VERSION, "ollamafs": env!("CARGO_PKG_VERSION") }))
}

/// The Ollama release whose store and management API ollamafs mirrors; clients use
/// `/api/version` to decide which fields to expect.
pub const OLLAMA_API_VERSION: &str = "0.33.0";

async fn tags(State(cat): State<Shared>) -> Response {
    match blocking(move || Ok(models::tags(&*cat))).await {
        Ok(list) => json(StatusCode::OK, &list),
        Err(e) => e.into_response(),
    }
}

/// Status objects as Ollama sends them: one JSON object a line when streaming (the work is
/// done by the time they are sent), or just the last one.
fn status_stream(res: Result<(bool, Vec<serde_json::Value>), ApiError>) -> Response {
    match res {
        Ok((true, events)) => {
            let mut text = String::new();
            for e in events {
                text.push_str(&e.to_string());
                text.push('\n');
            }
            ([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], text).into_response()
        }
        Ok((false, events)) => json(StatusCode::OK, events.last().unwrap_or(&serde_json::json!({"status": "success"}))),
        Err(e) => e.into_response(),
    }
}

/// `POST /api/pull`, `POST /api/push`: registry transfers (`crate::registry`).
async fn pull(State(cat): State<Shared>, body: Bytes) -> Response {
    status_stream(blocking(move || registry::transfer(&*cat, &body, true)).await)
}

async fn push(State(cat): State<Shared>, body: Bytes) -> Response {
    status_stream(blocking(move || registry::transfer(&*cat, &body, false)).await)
}

/// `POST /api/create`: Ollama's status objects, one JSON object per line when streaming
/// (the work takes milliseconds, so they are sent together), or just the last one.
async fn create(State(cat): State<Shared>, body: Bytes) -> Response {
    status_stream(blocking(move || create::create(&*cat, &body)).await)
}

async fn copy(State(cat): State<Shared>, body: Bytes) -> Response {
    match blocking(move || models::copy(&*cat, &body)).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn delete(State(cat): State<Shared>, body: Bytes) -> Response {
    match blocking(move || models::delete(&*cat, &body)).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn show(State(cat): State<Shared>, body: Bytes) -> Response {
    match blocking(move || models::show(&*cat, &body)).await {
        Ok(r) => json(StatusCode::OK, &r),
        Err(e) => e.into_response(),
    }
}

async fn head_blob(State(cat): State<Shared>, Path(digest): Path<String>) -> Response {
    match blocking(move || models::head_blob(&*cat, &digest)).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

/// The body is forwarded chunk by chunk to a blocking ingest; memory stays at a few
/// chunks whatever the blob's size. A client that goes away mid-upload leaves nothing.
async fn upload_blob(State(cat): State<Shared>, Path(param): Path<String>, body: Body) -> Response {
    let digest = match models::blob_digest(&param) {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    let probe = cat.clone();
    if let Ok(true) = blocking(move || Ok(models::blob_exists(&*probe, &digest))).await {
        return StatusCode::OK.into_response(); // Ollama does not read the body then
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(8);
    let ingest = tokio::task::spawn_blocking(move || models::upload_blob(&*cat, &digest, ChannelReader::new(rx)));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let failed = chunk.is_err();
        if tx.send(chunk.map_err(io::Error::other)).await.is_err() || failed {
            break; // the ingest stopped (disk full, say) or the client went away
        }
    }
    drop(tx);
    match ingest.await {
        Ok(Ok(201)) => StatusCode::CREATED.into_response(),
        Ok(Ok(_)) => StatusCode::OK.into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => ApiError::internal(format!("upload failed: {e}")).into_response(),
    }
}

/// A blocking `Read` over the chunks of a request body.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    fn new(rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>) -> ChannelReader {
        ChannelReader { rx, current: Bytes::new() }
    }
}

impl io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// Where to listen: `--listen`, else `OLLAMA_HOST` read the way Ollama reads it, else
/// 127.0.0.1:11434.
pub fn listen_addr(flag: Option<&str>) -> String {
    if let Some(a) = flag {
        return host_to_addr(a);
    }
    host_to_addr(&std::env::var("OLLAMA_HOST").unwrap_or_default())
}

/// Ollama's `envconfig.Host`: an optional scheme (http → port 80, https → 443 when none is
/// given), a host or IP (default 127.0.0.1), an optional port (default 11434), a path ignored.
pub fn host_to_addr(s: &str) -> String {
    let s = s.trim().trim_matches(|c| c == '"' || c == '\'');
    let (default_port, hostport) = match s.split_once("://") {
        Some(("https", rest)) => ("443", rest),
        Some(("http", rest)) => ("80", rest),
        Some((_, rest)) => ("11434", rest),
        None => ("11434", s),
    };
    let hostport = hostport.split('/').next().unwrap_or("");
    let (host, port) = match split_host_port(hostport) {
        Some((h, p)) => (h.to_string(), p.to_string()),
        None => {
            let h = hostport.trim_matches(|c| c == '[' || c == ']');
            (if h.is_empty() { "127.0.0.1".to_string() } else { h.to_string() }, default_port.to_string())
        }
    };
    let port = if port.parse::<u16>().is_ok() { port } else { default_port.to_string() };
    // An empty host (":8080") means every interface, as in Go.
    let host = if host.is_empty() { "0.0.0.0".to_string() } else { host };
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// `net.SplitHostPort`: "host:port" or "[v6]:port"; None when there is no port.
fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        return after.strip_prefix(':').map(|p| (h, p));
    }
    let (h, p) = s.rsplit_once(':')?;
    if h.contains(':') {
        return None; // a bare IPv6 address
    }
    Some((h, p))
}

/// Bind before anything else starts, so a busy port is a clear error at once.
pub fn bind(addr: &str) -> io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Serve until `shutdown` completes, then finish the requests in flight (at most
/// `SHUTDOWN_GRACE`). Blocks the calling thread.
pub fn run(
    listener: TcpListener,
    catalog: Shared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .thread_name("api")
        .enable_all()
        .build()?;
    rt.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let server = axum::serve(listener, router(catalog)).with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let mut stop_rx = stop_rx;
        let deadline = async move {
            let _ = stop_rx.wait_for(|s| *s).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            res = server => res,
            () = deadline => {
                log::warn!("API requests still running after {SHUTDOWN_GRACE:?}; stopping anyway");
                Ok(())
            }
        }
    })?;
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
