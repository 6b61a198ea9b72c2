//! One published TCP port: accepts connections and hands each to the next Ready endpoint.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::balancer::{Backend, Balancer};
use super::forward::{forward, reset, Unreachable};

/// How long the accept loop pauses after a failed accept (out of file descriptors).
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// A listening published port. Dropping it closes the port; connections already
/// forwarded go on until their ends close them.
pub struct Listener {
    pub address: SocketAddr,
    balancer: Arc<Mutex<Balancer<Backend>>>,
    /// Container addresses a direct connection failed at, until the backends change.
    unreachable: Unreachable,
    accept: JoinHandle<()>,
}

impl Listener {
    /// Listens on `bind:port` and forwards every accepted connection to the balancer's
    /// next backend; with no backend the connection is reset at once.
    ///
    /// # Errors
    /// When the port cannot be bound (in use, or a privileged port).
    pub async fn open(
        bind: IpAddr,
        port: u16,
        connect_timeout: Duration,
    ) -> std::io::Result<Listener> {
        let listener = TcpListener::bind((bind, port)).await?;
        let address = listener.local_addr()?;
        let balancer = Arc::new(Mutex::new(Balancer::default()));
        let unreachable = Unreachable::default();
        let accept = tokio::spawn(accept_loop(
            listener,
            balancer.clone(),
            connect_timeout,
            unreachable.clone(),
        ));
        Ok(Listener {
            address,
            balancer,
            unreachable,
            accept,
        })
    }

    /// The backends new connections go to from now on. A change also forgets which
    /// container addresses failed: they are tried again.
    pub fn set_backends(&self, backends: Vec<Backend>) {
        let mut balancer = self.balancer.lock().unwrap_or_else(|p| p.into_inner());
        if balancer.backends() != backends.as_slice() {
            tracing::debug!(address = %self.address, ?backends, "backends changed");
            balancer.set_backends(backends);
            self.unreachable.clear();
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    balancer: Arc<Mutex<Balancer<Backend>>>,
    connect_timeout: Duration,
    unreachable: Unreachable,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let backend = balancer.lock().unwrap_or_else(|p| p.into_inner()).pick();
        match backend {
            Some(backend) => {
                tokio::spawn(forward(
                    stream,
                    backend,
                    connect_timeout,
                    unreachable.clone(),
                ));
            }
            // No Ready endpoint: refuse at once rather than let the client hang.
            None => reset(stream),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    #[tokio::test]
    async fn refuses_without_backends_and_forwards_with_one() {
        let localhost: IpAddr = "127.0.0.1".parse().unwrap();
        let listener = Listener::open(localhost, 0, Duration::from_secs(1))
            .await
            .unwrap();
        let mut client = TcpStream::connect(listener.address).await.unwrap();
        let mut buf = [0u8; 8];
        let started = std::time::Instant::now();
        assert!(client.read(&mut buf).await.is_err() || started.elapsed() < Duration::from_secs(1));

        let backend = TcpListener::bind((localhost, 0)).await.unwrap();
        listener.set_backends(vec![Backend {
            host: backend.local_addr().unwrap(),
            direct: None,
        }]);
        tokio::spawn(async move {
            let (mut stream, _) = backend.accept().await.unwrap();
            stream.write_all(b"hi").await.unwrap();
        });
        let mut client = TcpStream::connect(listener.address).await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"hi");

        let address = listener.address;
        drop(listener);
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            TcpStream::connect(address).await.is_err(),
            "the port is closed"
        );
    }
}
