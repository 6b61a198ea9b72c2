//! The agent's log endpoint: serves its own task containers' `docker logs` over HTTP.
//!
//! Only node-side controllers talk to Docker, and a CLI cannot reach a remote engine: as
//! kubectl asks the kubelet, `dctl logs` asks the agent at its Node's `status.agentAddress`
//! for `GET /v1/logs/<namespace>/<task>?follow=&tail=&timestamps=`, the container's stdout
//! and stderr as chunked `text/plain`. [`fetch`], the client, lives here too, so the path
//! and its parameters are written once. Every request carries the cluster's log token
//! ([`super::log_access`]); one without it is answered 401.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::query_parameters::{ListContainersOptionsBuilder, LogsOptionsBuilder};
use bollard::Docker;
use futures::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{AUTHORIZATION, CONNECTION, CONTENT_TYPE, HOST, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::container::{LABEL_NAMESPACE, LABEL_NODE, LABEL_TASK};
use super::log_access::{authorization, is_authorized};

/// Where an agent listens unless `--listen` says otherwise.
// Not 7946: that is Docker Swarm's gossip port, taken on any host in Swarm mode.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7950";
/// Every log path starts so; the version segment leaves room to change the protocol.
const LOGS_PATH: &str = "/v1/logs/";
/// How long a follow request waits for a first line before answering without one: an
/// engine error still arrives as a proper status, yet a quiet task answers promptly.
const FIRST_LINE_WAIT: Duration = Duration::from_millis(500);
/// How long the client waits for the agent to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the client waits for the answer's status (not for the log's end).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// How much of the log, and how: `docker logs`' own options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming new lines until the container stops or the client goes away.
    pub follow: bool,
    /// Only the last N lines; all of them for `None`.
    pub tail: Option<u64>,
    /// Docker's RFC 3339 timestamp in front of each line.
    pub timestamps: bool,
}

/// One task's log, as asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRequest {
    pub namespace: String,
    pub task: String,
    pub options: LogOptions,
}

/// Why a request is not a log request the endpoint can answer.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("no such path {0:?}; logs are at /v1/logs/<namespace>/<task>")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}

impl LogRequest {
    pub fn new(namespace: impl Into<String>, task: impl Into<String>, options: LogOptions) -> Self {
        LogRequest {
            namespace: namespace.into(),
            task: task.into(),
            options,
        }
    }

    /// `/v1/logs/<namespace>/<task>?follow=…&tail=…&timestamps=…`, every option spelled
    /// out so an agent never has to guess a default.
    pub fn path_and_query(&self) -> String {
        let options = &self.options;
        let tail = options.tail.map_or_else(|| "all".into(), |n| n.to_string());
        format!(
            "{LOGS_PATH}{}/{}?follow={}&tail={tail}&timestamps={}",
            self.namespace, self.task, options.follow, options.timestamps
        )
    }

    /// The inverse of [`LogRequest::path_and_query`]. Unknown parameters are refused, so
    /// an option this agent does not know of is never silently ignored.
    ///
    /// # Errors
    /// `NotFound` for another path; `Invalid` for a parameter that does not parse.
    pub fn parse(path: &str, query: Option<&str>) -> Result<LogRequest, RequestError> {
        let not_found = || RequestError::NotFound(path.to_string());
        let (namespace, task) = path
            .strip_prefix(LOGS_PATH)
            .and_then(|rest| rest.split_once('/'))
            .ok_or_else(not_found)?;
        if namespace.is_empty() || task.is_empty() || task.contains('/') {
            return Err(not_found());
        }
        let mut options = LogOptions::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "follow" => options.follow = parse_flag(key, value)?,
                "timestamps" => options.timestamps = parse_flag(key, value)?,
                "tail" => options.tail = parse_tail(value)?,
                _ => {
                    return Err(RequestError::Invalid(format!(
                        "unknown parameter {key:?}; known: follow, tail, timestamps"
                    )))
                }
            }
        }
        Ok(LogRequest::new(namespace, task, options))
    }
}

/// `true`/`false` (or `1`/`0`); a bare `follow` means `true`.
fn parse_flag(key: &str, value: &str) -> Result<bool, RequestError> {
    match value {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(RequestError::Invalid(format!(
            "{key} must be true or false, not {value:?}"
        ))),
    }
}

/// A number of lines, or `all`.
fn parse_tail(value: &str) -> Result<Option<u64>, RequestError> {
    if value == "all" {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|_| {
        RequestError::Invalid(format!(
            "tail must be a number of lines or all, not {value:?}"
        ))
    })
}

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// What every connection of one endpoint shares.
struct NodeLogs {
    docker: Docker,
    node: String,
    /// The cluster's log token, which every request must carry.
    token: String,
    /// Turns `true` at shutdown: streams break off and connections close.
    stopping: watch::Receiver<bool>,
}

/// Serves log requests that carry `token` for the containers of `node` (label
/// `dctl.node`) on `listener` until `shutdown` resolves; then logs still streaming break
/// off (the client sees an incomplete answer, not a log that ended) and idle connections
/// close.
pub async fn serve(
    listener: TcpListener,
    docker: Docker,
    node: String,
    token: String,
    shutdown: impl Future<Output = ()> + Send,
) {
    let (stop, stopping) = watch::channel(false);
    let logs = Arc::new(NodeLogs {
        docker,
        node,
        token,
        stopping,
    });
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    // A peer that reset before accept, or a full descriptor table: the
                    // listener itself is still good.
                    tracing::warn!(%error, "log endpoint: accept failed");
                    continue;
                }
            },
        };
        tokio::spawn(logs.clone().serve_connection(stream));
    }
    stop.send_replace(true);
}

impl NodeLogs {
    async fn serve_connection(self: Arc<Self>, stream: TcpStream) {
        let mut stopping = self.stopping.clone();
        let service = hyper::service::service_fn(move |request| {
            let logs = self.clone();
            async move { Ok::<_, Infallible>(logs.respond(request).await) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            // The guard `wait_for` returns is not `Send`: drop it at once.
            () = async { drop(stopping.wait_for(|stopping| *stopping).await) } => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(error) = result {
            tracing::debug!(%error, "log endpoint: connection ended with an error");
        }
    }

    async fn respond(&self, request: Request<Incoming>) -> Response<Body> {
        let given = request.headers().get(AUTHORIZATION).map(|h| h.as_bytes());
        if !is_authorized(given, &self.token) {
            let mut answer = text(
                StatusCode::UNAUTHORIZED,
                "a log request must carry the cluster's log token (dctl logs reads it from etcd)",
            );
            answer.headers_mut().insert(
                WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer"),
            );
            return answer;
        }
        if request.method() != Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here");
        }
        let uri = request.uri();
        let wanted = match LogRequest::parse(uri.path(), uri.query()) {
            Ok(wanted) => wanted,
            Err(error @ RequestError::NotFound(_)) => {
                return text(StatusCode::NOT_FOUND, &error.to_string())
            }
            Err(error) => return text(StatusCode::BAD_REQUEST, &error.to_string()),
        };
        match self.open(&wanted).await {
            Ok(body) => Response::builder()
                .header(CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(body)
                .expect("a response built from constant parts"),
            Err((status, message)) => text(status, &message),
        }
    }

    /// The log of `wanted`'s container on this node, or the status and message to answer.
    async fn open(&self, wanted: &LogRequest) -> Result<Body, (StatusCode, String)> {
        let no_container = || {
            let message = format!(
                "task {}/{} has no container on node {}",
                wanted.namespace, wanted.task, self.node
            );
            (StatusCode::NOT_FOUND, message)
        };
        let id = self
            .find_container(wanted)
            .await
            .map_err(|error| self.engine_error(&error))?
            .ok_or_else(no_container)?;
        let options = &wanted.options;
        let tail = options.tail.map_or_else(|| "all".into(), |n| n.to_string());
        let docker_options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .follow(options.follow)
            .timestamps(options.timestamps)
            .tail(&tail)
            .build();
        let mut lines = Box::pin(self.docker.logs(&id, Some(docker_options)).peekable());
        // Docker is only asked once the stream is polled: look at the first item, so that
        // a refusal is answered with a status rather than a log cut short.
        let failed = if options.follow {
            let first = tokio::time::timeout(FIRST_LINE_WAIT, lines.as_mut().peek()).await;
            matches!(first, Ok(Some(Err(_))))
        } else {
            matches!(lines.as_mut().peek().await, Some(Err(_)))
        };
        if failed {
            if let Some(Err(error)) = lines.next().await {
                return Err(match error {
                    // Removed since it was listed.
                    DockerError::DockerResponseServerError {
                        status_code: 404, ..
                    } => no_container(),
                    error => self.engine_error(&error),
                });
            }
        }
        // At shutdown the log breaks off with an error rather than ending: the client must
        // not take a stopping agent for a container that finished.
        let frames = futures::stream::unfold(
            (lines, self.stopping.clone()),
            |(mut lines, mut stopping)| async move {
                let item = tokio::select! {
                    item = lines.next() => item?.map_err(std::io::Error::other),
                    () = async { drop(stopping.wait_for(|stopping| *stopping).await) } => {
                        Err(std::io::Error::other("the agent is shutting down"))
                    }
                };
                Some((
                    item.map(|output| Frame::data(output.into_bytes())),
                    (lines, stopping),
                ))
            },
        );
        Ok(StreamBody::new(frames).boxed_unsync())
    }

    /// The container of the task, running or not; only this node's own are considered.
    async fn find_container(&self, wanted: &LogRequest) -> Result<Option<String>, DockerError> {
        let labels = vec![
            format!("{LABEL_NODE}={}", self.node),
            format!("{LABEL_NAMESPACE}={}", wanted.namespace),
            format!("{LABEL_TASK}={}", wanted.task),
        ];
        let filters = HashMap::from([("label".to_string(), labels)]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let mut containers = self.docker.list_containers(Some(options)).await?;
        // The container name is unique per engine, so there is one; should someone have
        // made more by hand, the newest is the one that speaks for the task.
        containers.sort_by_key(|c| std::cmp::Reverse(c.created));
        Ok(containers.into_iter().find_map(|c| c.id))
    }

    fn engine_error(&self, error: &DockerError) -> (StatusCode, String) {
        match error {
            DockerError::DockerResponseServerError { message, .. } => (
                StatusCode::BAD_GATEWAY,
                format!("the Docker engine of node {} refused: {message}", self.node),
            ),
            error => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "cannot reach the Docker engine of node {}: {error}",
                    self.node
                ),
            ),
        }
    }
}

/// A one-line plain-text answer.
fn text(status: StatusCode, message: &str) -> Response<Body> {
    let body = Full::new(Bytes::from(format!("{message}\n")))
        .map_err(|never| match never {})
        .boxed_unsync();
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(body)
        .expect("a response built from constant parts")
}

/// Why an agent did not give a task's log.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot reach the agent at {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent at {address} did not answer within {after:?}")]
    Timeout { address: String, after: Duration },
    #[error("the connection to the agent at {address} failed: {}", causes(.source))]
    Http {
        address: String,
        #[source]
        source: hyper::Error,
    },
    /// Stored names are DNS labels; a name typed by hand may not fit in a URI.
    #[error("cannot ask the agent at {address} for {path:?}: not a valid URI path")]
    BadPath { address: String, path: String },
    /// The agent answered, with an error status and its one-line message.
    #[error("the agent at {address} answered {status}: {message}")]
    Refused {
        address: String,
        status: StatusCode,
        message: String,
    },
}

/// An error and its causes on one line: hyper's own text rarely says what went wrong.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

impl FetchError {
    /// The agent has no container for the task (never created, or already removed).
    pub fn is_not_found(&self) -> bool {
        matches!(self, FetchError::Refused { status, .. } if *status == StatusCode::NOT_FOUND)
    }
}

/// A task's log as its agent streams it.
pub struct LogStream {
    address: String,
    body: Incoming,
}

impl LogStream {
    /// The next bytes of the log, in no particular relation to its lines; `None` at its
    /// end (for a followed log: once the container stops). An agent shutting down breaks
    /// the log off with an error.
    pub async fn chunk(&mut self) -> Option<Result<Bytes, FetchError>> {
        loop {
            match self.body.frame().await? {
                // Trailers carry nothing for us.
                Ok(frame) => match frame.into_data() {
                    Ok(data) => return Some(Ok(data)),
                    Err(_trailers) => continue,
                },
                Err(source) => {
                    let address = self.address.clone();
                    return Some(Err(FetchError::Http { address, source }));
                }
            }
        }
    }
}

/// Asks the agent at `address` (`host:port`, a Node's `status.agentAddress`) for a log,
/// with the cluster's log `token`.
///
/// # Errors
/// The agent is unreachable or slow to answer, or answers with an error status (its
/// message included; [`FetchError::is_not_found`] when the task has no container there).
pub async fn fetch(
    address: &str,
    token: &str,
    wanted: &LogRequest,
) -> Result<LogStream, FetchError> {
    let timed_out = |after| FetchError::Timeout {
        address: address.to_string(),
        after,
    };
    let http = |source| FetchError::Http {
        address: address.to_string(),
        source,
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| timed_out(CONNECT_TIMEOUT))?
        .map_err(|source| FetchError::Connect {
            address: address.to_string(),
            source,
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "log client: connection ended with an error");
        }
    });
    let path = wanted.path_and_query();
    let request = Request::get(&path)
        .header(HOST, address)
        .header(AUTHORIZATION, authorization(token))
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|_| FetchError::BadPath {
            address: address.to_string(),
            path: path.clone(),
        })?;
    let response = tokio::time::timeout(ANSWER_TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| timed_out(ANSWER_TIMEOUT))?
        .map_err(http)?;
    let status = response.status();
    if !status.is_success() {
        let body = tokio::time::timeout(ANSWER_TIMEOUT, response.into_body().collect()).await;
        let message = match body {
            Ok(Ok(body)) => String::from_utf8_lossy(&body.to_bytes()).trim().to_string(),
            _ => String::new(),
        };
        return Err(FetchError::Refused {
            address: address.to_string(),
            status,
            message,
        });
    }
    Ok(LogStream {
        address: address.to_string(),
        body: response.into_body(),
    })
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn options(follow: bool, tail: Option<u64>, timestamps: bool) -> LogOptions {
        LogOptions {
            follow,
            tail,
            timestamps,
        }
    }

    #[test]
    fn a_request_round_trips_through_its_path() {
        for options in [
            LogOptions::default(),
            options(true, Some(10), true),
            options(false, Some(0), false),
        ] {
            let wanted = LogRequest::new("demo", "web.1.abcde", options);
            let text = wanted.path_and_query();
            let (path, query) = text.split_once('?').unwrap();
            assert_eq!(LogRequest::parse(path, Some(query)), Ok(wanted));
        }
        assert_eq!(
            LogRequest::new("e2e", "web.1.x", options(true, Some(1), false)).path_and_query(),
            "/v1/logs/e2e/web.1.x?follow=true&tail=1&timestamps=false"
        );
    }

    #[test]
    fn parameters_default_to_the_whole_log_once() {
        let parsed = LogRequest::parse("/v1/logs/ns/t", None).unwrap();
        assert_eq!(parsed.options, LogOptions::default());
        let parsed = LogRequest::parse("/v1/logs/ns/t", Some("follow&tail=all&timestamps=1"));
        assert_eq!(parsed.unwrap().options, options(true, None, true));
    }

    #[test]
    fn other_paths_and_bad_parameters_are_refused() {
        for path in [
            "/",
            "/v1/logs/",
            "/v1/logs/ns",
            "/v1/logs/ns/",
            "/v1/logs//t",
            "/v1/logs/ns/t/x",
            "/v2/logs/ns/t",
        ] {
            assert_eq!(
                LogRequest::parse(path, None),
                Err(RequestError::NotFound(path.to_string())),
                "{path}"
            );
        }
        for query in ["follow=yes", "tail=-1", "tail=", "since=1h"] {
            let parsed = LogRequest::parse("/v1/logs/ns/t", Some(query));
            assert!(matches!(parsed, Err(RequestError::Invalid(_))), "{query}");
        }
    }

    async fn raw(address: &str, request: &str) -> String {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn the_endpoint_answers_errors_with_a_status_and_one_line() {
        // An engine at an address nobody listens on.
        let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let engine = format!("http://{}", gone.local_addr().unwrap());
        drop(gone);
        let docker = Docker::connect_with_http(&engine, 5, bollard::API_DEFAULT_VERSION).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let token = "t0ken";
        let server = tokio::spawn(serve(listener, docker, "n1".into(), token.into(), async {
            let _ = stopped.await;
        }));

        let wanted = LogRequest::new("demo", "web.1.abcde", LogOptions::default());
        let error = fetch(&address, "guess", &wanted).await.err().unwrap();
        match &error {
            FetchError::Refused { status, .. } => assert_eq!(*status, StatusCode::UNAUTHORIZED),
            other => panic!("{other:?}"),
        }
        let error = fetch(&address, token, &wanted).await.err().unwrap();
        match &error {
            FetchError::Refused {
                status, message, ..
            } => {
                assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE);
                assert!(
                    message.starts_with("cannot reach the Docker engine of node n1"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(!error.is_not_found());

        let close = "HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let answer = raw(&address, &format!("GET /v1/logs/demo/web.1.abcde {close}")).await;
        assert!(
            answer.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
            "{answer}"
        );
        assert!(answer.contains("www-authenticate: Bearer\r\n"), "{answer}");
        let close = format!(
            "HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        let answer = raw(&address, &format!("GET /metrics {close}")).await;
        assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
        assert!(answer.ends_with("logs are at /v1/logs/<namespace>/<task>\n"));
        let answer = raw(&address, &format!("GET /v1/logs/ns/t?tail=x {close}")).await;
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        let answer = raw(&address, &format!("DELETE /v1/logs/ns/t {close}")).await;
        assert!(answer.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));

        stop.send(()).unwrap();
        server.await.unwrap();
        let error = fetch(&address, token, &wanted).await.err().unwrap();
        assert!(matches!(error, FetchError::Connect { .. }), "{error:?}");
    }
}
