//! Forwards one accepted TCP connection to its backend, both ways, until both sides close.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;

use super::balancer::Backend;
#[cfg(target_os = "linux")]
use super::pipes::PIPES;
#[cfg(target_os = "linux")]
use realm_io::{CopyBuffer, Pipe};

/// The user-space copy's buffer per direction, where bytes cannot move in the kernel: as
/// large as Go's `io.Copy` (docker-proxy's), four times tokio's default, so a bulk
/// stream makes a quarter of the system calls.
const COPY_BUFFER: usize = 32 * 1024;

/// How long a connection to a container on this node, at its own address, may take to
/// open before the proxy gives up on that address and dials the host port instead. A
/// container on a bridge network answers in well under a millisecond.
pub const DIRECT_CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

/// The container addresses a direct connection failed at, shared by one listener's
/// connections so that each is tried once, not on every connection; cleared when the
/// listener's endpoints change.
#[derive(Clone, Debug, Default)]
pub struct Unreachable(Arc<Mutex<HashSet<SocketAddr>>>);

impl Unreachable {
    fn contains(&self, address: SocketAddr) -> bool {
        self.lock().contains(&address)
    }

    fn insert(&self, address: SocketAddr) {
        self.lock().insert(address);
    }

    /// Forgets every failure: the endpoints changed, the addresses may answer now.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<SocketAddr>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Connects to `backend` (within `connect_timeout`) and copies bytes both ways until both
/// directions are closed. A backend that cannot be reached resets the client's connection
/// at once: one attempt only, as kube-proxy and IPVS do, so a client never waits on a
/// backend that is down and a Ready endpoint that does not answer shows as the failure it
/// is. (The direct address of a task on this node is not an attempt of its own: when it
/// fails, the host port is the attempt.)
pub async fn forward(
    client: TcpStream,
    backend: Backend,
    connect_timeout: Duration,
    unreachable: Unreachable,
) {
    let mut client = client;
    let Some(mut server) = connect(backend, connect_timeout, &unreachable).await else {
        reset(client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    if let Err(error) = copy_both_ways(&mut client, &mut server).await {
        tracing::trace!(backend = %backend.host, %error, "connection ended with an error");
    }
}

/// A connection to the container's own address when the task runs on this node and that
/// address has not failed before, else (or when it fails now) to the host port; `None`
/// when the host port cannot be reached either.
async fn connect(
    backend: Backend,
    connect_timeout: Duration,
    unreachable: &Unreachable,
) -> Option<TcpStream> {
    if let Some(direct) = backend
        .direct
        .filter(|direct| !unreachable.contains(*direct))
    {
        match tokio::time::timeout(DIRECT_CONNECT_TIMEOUT, TcpStream::connect(direct)).await {
            Ok(Ok(server)) => return Some(server),
            Ok(Err(error)) => {
                tracing::debug!(%direct, host = %backend.host, %error, "cannot reach the container directly; using the host port from now on");
            }
            Err(_) => {
                tracing::debug!(%direct, host = %backend.host, timeout = ?DIRECT_CONNECT_TIMEOUT, "direct connect to the container timed out; using the host port from now on");
            }
        }
        unreachable.insert(direct);
    }
    let host = backend.host;
    match tokio::time::timeout(connect_timeout, TcpStream::connect(host)).await {
        Ok(Ok(server)) => Some(server),
        Ok(Err(error)) => {
            tracing::debug!(backend = %host, %error, "cannot reach the backend; resetting the client");
            None
        }
        Err(_) => {
            tracing::debug!(backend = %host, ?connect_timeout, "backend connect timed out; resetting the client");
            None
        }
    }
}

/// Copies bytes both ways until both directions are closed, each closed direction's end
/// passed on as a shutdown of the other side's write half. On Linux the bytes move
/// through a pipe per direction with splice(2), never through user space, the pipes
/// taken from and given back to the [`pipes`](super::pipes) pool; when no pipe can be had
/// (out of file descriptors), nothing was read yet and the copy goes through user space
/// instead.
async fn copy_both_ways(client: &mut TcpStream, server: &mut TcpStream) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    match (PIPES.take(), PIPES.take()) {
        (Ok(mut outward), Ok(mut inward)) => {
            let outward_buffer: CopyBuffer<&mut Pipe, TcpStream, TcpStream> =
                CopyBuffer::new(&mut outward);
            let inward_buffer: CopyBuffer<&mut Pipe, TcpStream, TcpStream> =
                CopyBuffer::new(&mut inward);
            let copied = realm_io::bidi_copy_buf(client, server, outward_buffer, inward_buffer)
                .await
                .map(drop);
            // After an error a pipe may still hold bytes: it is closed, not reused.
            if copied.is_ok() {
                PIPES.give_back(outward);
                PIPES.give_back(inward);
            }
            return copied;
        }
        (Err(error), _) | (_, Err(error)) => {
            tracing::debug!(%error, "no pipe for splice; copying through user space");
        }
    }
    tokio::io::copy_bidirectional_with_sizes(client, server, COPY_BUFFER, COPY_BUFFER)
        .await
        .map(drop)
}

/// Closes `stream` with a RST instead of a FIN, so the peer sees a refusal at once rather
/// than an orderly (and ambiguous) end of stream.
pub fn reset(stream: TcpStream) {
    // A zero linger makes close send RST and drop unsent data.
    let _ = stream.set_zero_linger();
    drop(stream);
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn copies_both_ways_and_resets_when_the_backend_is_down() {
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend_addr = backend.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = backend.accept().await.unwrap();
            let mut buf = [0u8; 4];
            stream.read_exact(&mut buf).await.unwrap();
            stream.write_all(b"pong").await.unwrap();
        });
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front_addr = front.local_addr().unwrap();
        // Nothing listens on a closed listener's port any more.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone = closed.local_addr().unwrap();
        drop(closed);
        tokio::spawn(async move {
            for host in [backend_addr, gone] {
                let (stream, _) = front.accept().await.unwrap();
                let backend = Backend { host, direct: None };
                let unreachable = Unreachable::default();
                tokio::spawn(forward(
                    stream,
                    backend,
                    Duration::from_secs(1),
                    unreachable,
                ));
            }
        });
        let mut client = TcpStream::connect(front_addr).await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"pong");
        drop(client);

        let mut client = TcpStream::connect(front_addr).await.unwrap();
        let mut buf = [0u8; 1];
        let read = client.read(&mut buf).await;
        assert!(
            matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "{read:?}"
        );
    }

    #[tokio::test]
    async fn dials_the_container_first_and_falls_back_to_the_host_port_once() {
        let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_addr = up.local_addr().unwrap();
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let down = closed.local_addr().unwrap();
        drop(closed);
        let timeout = Duration::from_secs(1);
        let unreachable = Unreachable::default();

        // The container answers at its own address: the host port is not dialled.
        let direct_up = Backend {
            host: down,
            direct: Some(up_addr),
        };
        let server = connect(direct_up, timeout, &unreachable).await;
        assert_eq!(server.unwrap().peer_addr().unwrap(), up_addr);

        // It does not: the host port serves, and the address is not tried again.
        let direct_down = Backend {
            host: up_addr,
            direct: Some(down),
        };
        let server = connect(direct_down, timeout, &unreachable).await;
        assert_eq!(server.unwrap().peer_addr().unwrap(), up_addr);
        assert!(unreachable.contains(down));
        let host_down_too = Backend {
            host: down,
            direct: Some(down),
        };
        assert!(connect(host_down_too, timeout, &unreachable)
            .await
            .is_none());

        // Once the endpoints change, it is tried again.
        unreachable.clear();
        assert!(!unreachable.contains(down));
    }
}
