//! Prometheus metrics of the controllers and watchers, and the endpoint that serves them.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::OnceLock;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;

/// The content type of the OpenMetrics text format that [`encode`] produces.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The registry and the metric families registered in it.
pub struct Metrics {
    registry: Registry,
    queue_depth: Family<ControllerLabels, Gauge>,
    reconciles: Family<ControllerLabels, Counter>,
    reconcile_errors: Family<ControllerLabels, Counter>,
    reconcile_duration: HistogramFamily<ControllerLabels>,
    relists: Family<KindLabels, Counter>,
}

/// One controller's handles into the families; cloned metrics share their values.
#[derive(Clone, Debug)]
pub struct ControllerMetrics {
    /// Keys due and waiting for a worker; keys whose requeue or backoff deadline is still
    /// ahead are not counted, so a steady non-zero depth means the workers cannot keep up.
    pub queue_depth: Gauge,
    pub reconciles: Counter,
    pub reconcile_errors: Counter,
    pub reconcile_duration: Histogram,
}

fn reconcile_duration_histogram() -> Histogram {
    // 1 ms … ~33 s: a reconcile is a few store reads and writes, or a Docker call.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let queue_depth = Family::<ControllerLabels, Gauge>::default();
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let reconcile_errors = Family::<ControllerLabels, Counter>::default();
        let reconcile_duration: HistogramFamily<ControllerLabels> =
            Family::new_with_constructor(reconcile_duration_histogram);
        let relists = Family::<KindLabels, Counter>::default();
        // The encoder appends `_total` to counters and the unit to the name.
        registry.register(
            "dctl_controller_queue_depth",
            "Keys waiting in a controller's work queue",
            queue_depth.clone(),
        );
        registry.register(
            "dctl_controller_reconcile",
            "Reconciles a controller has run",
            reconciles.clone(),
        );
        registry.register(
            "dctl_controller_reconcile_errors",
            "Reconciles that returned an error",
            reconcile_errors.clone(),
        );
        registry.register_with_unit(
            "dctl_controller_reconcile_duration",
            "How long one reconcile took",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        registry.register(
            "dctl_watcher_relists",
            "Lists a watcher redid after its first (the watch fell behind etcd compaction)",
            relists.clone(),
        );
        Metrics {
            registry,
            queue_depth,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            relists,
        }
    }
}

impl Metrics {
    /// The metrics of the controller called `name`, created at zero on first use.
    pub fn controller(&self, name: &str) -> ControllerMetrics {
        let labels = ControllerLabels {
            controller: name.to_string(),
        };
        ControllerMetrics {
            queue_depth: self.queue_depth.get_or_create(&labels).clone(),
            reconciles: self.reconciles.get_or_create(&labels).clone(),
            reconcile_errors: self.reconcile_errors.get_or_create(&labels).clone(),
            reconcile_duration: self.reconcile_duration.get_or_create(&labels).clone(),
        }
    }

    pub fn record_relist(&self, kind: &str) {
        self.relists
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Everything in the registry, in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("encoding metrics into a String");
        text
    }
}

/// The process-global metrics: every controller and watcher in the process reports into
/// them, and [`serve`] exposes them on `GET /metrics` in the OpenMetrics text format, which
/// Prometheus scrapes natively.
pub fn global() -> &'static Metrics {
    static GLOBAL: OnceLock<Metrics> = OnceLock::new();
    GLOBAL.get_or_init(Metrics::default)
}

/// Counts one full relist of `kind` (called by the watcher).
pub fn record_relist(kind: &str) {
    global().record_relist(kind);
}

/// The global registry in the OpenMetrics text format.
pub fn encode() -> String {
    global().encode()
}

/// Serves the global registry on `GET /metrics` at `addr` until `shutdown` resolves.
///
/// # Errors
/// Binding `addr` failed (in use, not permitted).
pub async fn serve(
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    serve_on(TcpListener::bind(addr).await?, shutdown).await;
    Ok(())
}

/// Like [`serve`], on a listener already bound (so a caller can bind port 0 and learn it).
///
/// On shutdown the listener closes; a scrape already being answered is left to finish on
/// its own task.
pub async fn serve_on(listener: TcpListener, shutdown: impl Future<Output = ()> + Send) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    // Per-connection failures (e.g. the peer reset before accept, or too
                    // many open files): the listener itself is still good.
                    tracing::warn!(%error, "metrics endpoint: accept failed");
                    continue;
                }
            },
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(respond);
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "metrics endpoint: connection ended with an error");
            }
        });
    }
}

async fn respond(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = if request.method() == Method::GET && request.uri().path() == "/metrics" {
        Response::builder()
            .header(hyper::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(Full::new(Bytes::from(encode())))
    } else {
        Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(
                b"not found; try GET /metrics\n",
            )))
    };
    Ok(response.expect("a response built from constant parts"))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    #[test]
    fn counters_gauges_and_histograms_are_encoded_under_their_names() {
        let metrics = Metrics::default();
        let service = metrics.controller("service");
        service.reconciles.inc();
        service.reconciles.inc();
        service.reconcile_errors.inc();
        service.queue_depth.set(3);
        service.reconcile_duration.observe(0.003);
        metrics.record_relist("tasks");

        let text = metrics.encode();
        let bucket = "dctl_controller_reconcile_duration_seconds_bucket";
        for line in [
            r#"dctl_controller_queue_depth{controller="service"} 3"#,
            r#"dctl_controller_reconcile_total{controller="service"} 2"#,
            r#"dctl_controller_reconcile_errors_total{controller="service"} 1"#,
            r#"dctl_controller_reconcile_duration_seconds_count{controller="service"} 1"#,
            r#"dctl_watcher_relists_total{kind="tasks"} 1"#,
            &format!(r#"{bucket}{{le="0.004",controller="service"}} 1"#),
            &format!(r#"{bucket}{{le="0.002",controller="service"}} 0"#),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn handles_of_one_controller_share_their_values() {
        let metrics = Metrics::default();
        metrics.controller("gc").reconciles.inc();
        metrics.controller("gc").reconciles.inc();
        assert_eq!(metrics.controller("gc").reconciles.get(), 2);
        assert_eq!(metrics.controller("scheduler").reconciles.get(), 0);
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: dctl\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn the_endpoint_serves_the_global_registry_over_tcp_until_shutdown() {
        global().controller("scrape-test").reconciles.inc();
        record_relist("scrape-test-kind");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_on(listener, async {
            let _ = stopped.await;
        }));

        let response = get(addr, "/metrics").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.contains(&format!("content-type: {CONTENT_TYPE}\r\n")));
        assert!(
            response.contains("\ndctl_controller_reconcile_total{controller=\"scrape-test\"} 1\n")
        );
        assert!(response.contains("\ndctl_watcher_relists_total{kind=\"scrape-test-kind\"} 1\n"));

        let response = get(addr, "/").await;
        assert!(
            response.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{response}"
        );

        stop.send(()).unwrap();
        server.await.unwrap();
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "still listening after shutdown"
        );
    }
}
