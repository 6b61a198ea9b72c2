//! One published UDP port. UDP has no connections, so the proxy keeps a session per client
//! address, as conntrack does for kube-proxy and as docker-proxy does: a client's
//! datagrams all go to the endpoint its first one was given (round robin over the Ready
//! endpoints), through a socket of the session's own, and the endpoint's answers go back
//! to the client from the published port.
//!
//! A session ends after [`SESSION_IDLE`] without a datagram either way; at once when its
//! endpoint stops being Ready, so the client's next datagram goes to a Ready one (the
//! datagram counterpart of "new connections stop at once"); and when the endpoint answers
//! with an ICMP port-unreachable. With no Ready endpoint a datagram is dropped: UDP has no
//! refusal to send back.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use super::balancer::Balancer;

/// Linux conntrack's `nf_conntrack_udp_timeout`.
pub const SESSION_IDLE: Duration = Duration::from_secs(30);
/// Each session holds a socket and a datagram buffer; past this many, datagrams from new
/// clients are dropped until sessions end.
const MAX_SESSIONS: usize = 4096;
/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_507;
/// How long the receive loop pauses after a failed receive.
const RECEIVE_PAUSE: Duration = Duration::from_millis(50);

/// A published UDP port. Dropping it closes the port and ends every session.
pub struct UdpRelay {
    pub address: SocketAddr,
    shared: Arc<Shared>,
    receive: JoinHandle<()>,
}

struct Shared {
    balancer: Mutex<Balancer>,
    sessions: Mutex<HashMap<SocketAddr, Session>>,
}

struct Session {
    backend: SocketAddr,
    socket: Arc<UdpSocket>,
    last_datagram: Arc<Mutex<Instant>>,
    answers: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.answers.abort();
    }
}

impl UdpRelay {
    /// Binds `bind:port` and relays every datagram to the client's session's endpoint.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn open(bind: IpAddr, port: u16) -> std::io::Result<UdpRelay> {
        let front = Arc::new(UdpSocket::bind((bind, port)).await?);
        let address = front.local_addr()?;
        let shared = Arc::new(Shared {
            balancer: Mutex::new(Balancer::default()),
            sessions: Mutex::new(HashMap::new()),
        });
        let receive = tokio::spawn(receive_loop(front, shared.clone()));
        Ok(UdpRelay {
            address,
            shared,
            receive,
        })
    }

    /// The backends new sessions go to from now on; sessions with any other end at once.
    pub fn set_backends(&self, backends: Vec<SocketAddr>) {
        let mut balancer = lock(&self.shared.balancer);
        if balancer.backends() == backends.as_slice() {
            return;
        }
        tracing::debug!(address = %self.address, ?backends, "udp backends changed");
        lock(&self.shared.sessions).retain(|_, session| backends.contains(&session.backend));
        balancer.set_backends(backends);
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.receive.abort();
        lock(&self.shared.sessions).clear();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn receive_loop(front: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut buffer = vec![0; MAX_DATAGRAM];
    loop {
        let (length, client) = match front.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(error) => {
                tracing::debug!(%error, "udp receive failed");
                tokio::time::sleep(RECEIVE_PAUSE).await;
                continue;
            }
        };
        let Some(socket) = session_socket(&front, &shared, client).await else {
            continue;
        };
        if let Err(error) = socket.send(&buffer[..length]).await {
            tracing::debug!(%client, %error, "udp datagram to the endpoint failed");
        }
    }
}

/// The socket of `client`'s session, opened now if it has none; `None` (the datagram is
/// dropped) with no Ready endpoint or too many sessions.
async fn session_socket(
    front: &Arc<UdpSocket>,
    shared: &Arc<Shared>,
    client: SocketAddr,
) -> Option<Arc<UdpSocket>> {
    {
        let sessions = lock(&shared.sessions);
        if let Some(session) = sessions.get(&client) {
            *lock(&session.last_datagram) = Instant::now();
            return Some(session.socket.clone());
        }
        if sessions.len() >= MAX_SESSIONS {
            tracing::debug!(%client, "too many udp sessions; datagram dropped");
            return None;
        }
    }
    let backend = lock(&shared.balancer).pick()?;
    let socket = match connected_socket(backend).await {
        Ok(socket) => Arc::new(socket),
        Err(error) => {
            tracing::debug!(%backend, %error, "cannot open a udp session");
            return None;
        }
    };
    let last_datagram = Arc::new(Mutex::new(Instant::now()));
    let answers = tokio::spawn(answer_loop(
        front.clone(),
        socket.clone(),
        client,
        last_datagram.clone(),
        Arc::downgrade(shared),
    ));
    let session = Session {
        backend,
        socket: socket.clone(),
        last_datagram,
        answers,
    };
    lock(&shared.sessions).insert(client, session);
    Some(socket)
}

async fn connected_socket(backend: SocketAddr) -> std::io::Result<UdpSocket> {
    let any = match backend.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let socket = UdpSocket::bind((any, 0)).await?;
    socket.connect(backend).await?;
    Ok(socket)
}

/// Sends the endpoint's answers back to `client` until the session has been idle for
/// `SESSION_IDLE` or the endpoint refuses, then ends the session.
async fn answer_loop(
    front: Arc<UdpSocket>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    last_datagram: Arc<Mutex<Instant>>,
    shared: Weak<Shared>,
) {
    let mut buffer = vec![0; MAX_DATAGRAM];
    loop {
        let idle_for = lock(&last_datagram).elapsed();
        let Some(wait) = SESSION_IDLE.checked_sub(idle_for).filter(|w| !w.is_zero()) else {
            break;
        };
        match tokio::time::timeout(wait, socket.recv(&mut buffer)).await {
            Ok(Ok(length)) => {
                *lock(&last_datagram) = Instant::now();
                if let Err(error) = front.send_to(&buffer[..length], client).await {
                    tracing::debug!(%client, %error, "udp answer to the client failed");
                }
            }
            // ECONNREFUSED: the endpoint's port is closed (an ICMP port unreachable).
            Ok(Err(error)) => {
                tracing::debug!(%client, %error, "udp session ended by the endpoint");
                break;
            }
            // Idle since the last look; the loop checks again, datagrams sent meanwhile
            // having moved `last_datagram`.
            Err(_) => {}
        }
    }
    if let Some(shared) = shared.upgrade() {
        let mut sessions = lock(&shared.sessions);
        if sessions
            .get(&client)
            .is_some_and(|s| Arc::ptr_eq(&s.socket, &socket))
        {
            sessions.remove(&client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UDP endpoint answering each datagram with `name`.
    async fn endpoint(name: &'static str) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buffer = [0u8; 64];
            loop {
                let (_, peer) = socket.recv_from(&mut buffer).await.unwrap();
                socket.send_to(name.as_bytes(), peer).await.unwrap();
            }
        });
        address
    }

    async fn ask(client: &UdpSocket, relay: SocketAddr) -> Option<String> {
        client.send_to(b"who?", relay).await.unwrap();
        let mut buffer = [0u8; 64];
        let answer = tokio::time::timeout(Duration::from_millis(300), client.recv(&mut buffer));
        let length = answer.await.ok()?.unwrap();
        Some(String::from_utf8_lossy(&buffer[..length]).into_owned())
    }

    async fn client() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").await.unwrap()
    }

    #[tokio::test]
    async fn sessions_stick_to_an_endpoint_until_it_is_no_longer_ready() {
        let localhost: IpAddr = "127.0.0.1".parse().unwrap();
        let relay = UdpRelay::open(localhost, 0).await.unwrap();
        let (a, b) = (endpoint("a").await, endpoint("b").await);
        let (first, second) = (client().await, client().await);

        // No Ready endpoint: dropped.
        assert_eq!(ask(&first, relay.address).await, None);

        relay.set_backends(vec![a, b]);
        let one = ask(&first, relay.address).await.unwrap();
        let other = ask(&second, relay.address).await.unwrap();
        assert_ne!(one, other, "two clients, two sessions, round robin");
        for _ in 0..3 {
            assert_eq!(ask(&first, relay.address).await.as_ref(), Some(&one));
        }

        // The first client's endpoint stops being Ready: its next datagram goes elsewhere.
        let remaining = if one == "a" { b } else { a };
        relay.set_backends(vec![remaining]);
        assert_eq!(ask(&first, relay.address).await, Some(other.clone()));
        assert_eq!(ask(&second, relay.address).await, Some(other));

        let address = relay.address;
        drop(relay);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(ask(&first, address).await, None, "closed with the relay");
    }
}
