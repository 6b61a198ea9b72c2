//! Client load through the proxy for end-to-end tests: short HTTP/1.0 `GET /` requests
//! from a few concurrent loops, bounded in time and count, tallied by the task and the
//! version that answered (the test server says `hello from <task> version <v>`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Concurrent client loops.
const CLIENTS: usize = 4;
/// Pause between two requests of one loop.
const PACE: Duration = Duration::from_millis(20);
/// No loop sends more than this many requests.
const MAX_REQUESTS: u64 = 20_000;

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `127.0.0.1:port`, where the tests' proxies listen.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Who answered a `GET /`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub task: String,
    pub version: String,
}

/// One `GET /` through the proxy: the name of the task that answered, or what failed.
pub async fn get_once(port: u16) -> Result<Answer, String> {
    get_once_at(loopback(port)).await
}

/// One `GET /` of the test server at `address`, whatever is in between.
pub async fn get_once_at(address: SocketAddr) -> Result<Answer, String> {
    let request = async {
        let mut stream = TcpStream::connect(address)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(b"GET / HTTP/1.0\r\nHost: web\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&answer);
        if !text.starts_with("HTTP/1.1 200") {
            return Err(format!("answer: {:?}", text.lines().next().unwrap_or("")));
        }
        // `hello from <task> version 1`
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        let words: Vec<&str> = body.split_whitespace().collect();
        match words.as_slice() {
            [_, "from", task, "version", version, ..] => Ok(Answer {
                task: (*task).to_string(),
                version: (*version).to_string(),
            }),
            _ => Err(format!("body: {body:?}")),
        }
    };
    tokio::time::timeout(Duration::from_secs(3), request)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// `POST <path>` straight to a task's container (not through the proxy).
pub async fn post(address: &str, path: &str) {
    let mut stream = TcpStream::connect((address, 8080)).await.unwrap();
    let request = format!("POST {path} HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{path}");
}

/// What the client loops saw.
#[derive(Default)]
pub struct Tally {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    by_task: Mutex<BTreeMap<String, u64>>,
    by_version: Mutex<BTreeMap<String, u64>>,
    /// The answers in order, with when they came, for "every answer after X was v2".
    answers: Mutex<Vec<(std::time::Instant, Answer)>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    pub fn by_task(&self) -> BTreeMap<String, u64> {
        self.by_task.lock().unwrap().clone()
    }

    pub fn by_version(&self) -> BTreeMap<String, u64> {
        self.by_version.lock().unwrap().clone()
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().unwrap().clone()
    }

    /// The versions that answered requests sent after `since`.
    pub fn versions_since(&self, since: std::time::Instant) -> BTreeMap<String, u64> {
        let mut versions = BTreeMap::new();
        for (at, answer) in self.answers.lock().unwrap().iter() {
            if *at >= since {
                *versions.entry(answer.version.clone()).or_default() += 1;
            }
        }
        versions
    }

    /// One line for a test's output.
    pub fn summary(&self) -> String {
        format!(
            "ok {} failed {} by version {:?} by task {:?} errors {:?}",
            self.ok(),
            self.failed(),
            self.by_version(),
            self.by_task(),
            self.errors()
        )
    }
}

/// Client loops running until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub tally: Arc<Tally>,
    loops: Vec<JoinHandle<()>>,
}

impl Load {
    /// Client loops through the proxy on loopback.
    pub fn start(port: u16) -> Load {
        Load::start_at(loopback(port))
    }

    /// Client loops of `GET /` to `address`.
    pub fn start_at(address: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let loops = (0..CLIENTS)
            .map(|_| {
                let (stop, tally) = (stop.clone(), tally.clone());
                tokio::spawn(async move {
                    for _ in 0..MAX_REQUESTS {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let sent = std::time::Instant::now();
                        match get_once_at(address).await {
                            Ok(answer) => {
                                tally.ok.fetch_add(1, Ordering::SeqCst);
                                *tally
                                    .by_task
                                    .lock()
                                    .unwrap()
                                    .entry(answer.task.clone())
                                    .or_default() += 1;
                                *tally
                                    .by_version
                                    .lock()
                                    .unwrap()
                                    .entry(answer.version.clone())
                                    .or_default() += 1;
                                tally.answers.lock().unwrap().push((sent, answer));
                            }
                            Err(error) => {
                                tally.failed.fetch_add(1, Ordering::SeqCst);
                                *tally.errors.lock().unwrap().entry(error).or_default() += 1;
                            }
                        }
                        tokio::time::sleep(PACE).await;
                    }
                })
            })
            .collect();
        Load { stop, tally, loops }
    }

    pub async fn stop(self) -> Arc<Tally> {
        self.stop.store(true, Ordering::SeqCst);
        for handle in self.loops {
            handle.await.unwrap();
        }
        self.tally
    }
}
