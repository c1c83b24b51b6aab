//! A TCP proxy that injects one fault: it resets connections (RST) after a number of bytes sent
//! upstream, loses the answer to one request, or stalls every request from one on. The only test
//! double in the suite; it stands between the tool and a real server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// When to reset.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Reset the first `times` connections that send more than `after_bytes` upstream.
    ResetFirst { after_bytes: u64, times: usize },
    /// Reset every connection that sends more than `after_bytes`.
    ResetAlways { after_bytes: u64 },
    /// Let the first `times` requests whose request line starts with `method` and whose path ends
    /// with `path_ends` reach the server whole, then drop the server's answer and reset the client:
    /// the request took effect, and the client cannot know it.
    LoseAnswer { method: &'static str, path_ends: &'static str, times: usize },
    /// From the first request whose request line starts with `method` and whose path ends with
    /// `path_ends`, hold every request (that one included, on any connection) for `secs` seconds
    /// before it goes upstream: the store is out of reach for that long, then answers.
    StallFrom { method: &'static str, path_ends: &'static str, secs: u64 },
    /// `StallFrom`, and every request whose request line starts with `refuse` and whose path ends
    /// with `refuse_path_ends` is reset before it goes upstream: the store never sees it. (S3
    /// deletes from object_store, even of one key, are `POST /<bucket>?delete`.)
    StallRefusing {
        method: &'static str,
        path_ends: &'static str,
        secs: u64,
        refuse: &'static str,
        refuse_path_ends: &'static str,
    },
    /// Reset every request whose request line starts with `method` and whose path ends with
    /// `path_ends` before it goes upstream; pass the rest.
    Refuse { method: &'static str, path_ends: &'static str },
}

pub struct FaultProxy {
    port: u16,
    resets: Arc<AtomicUsize>,
    bytes: Arc<AtomicU64>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    pub fn start(upstream_port: u16, fault: Fault) -> Result<FaultProxy> {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST, upstream_port, fault)
    }

    /// A proxy listening on `address` (a node's Pods reach the host's end of the node network)
    /// in front of the server on `address`:`upstream_port`.
    pub fn start_on(address: std::net::Ipv4Addr, upstream_port: u16, fault: Fault) -> Result<FaultProxy> {
        let std_listener = std::net::TcpListener::bind((address, 0))?;
        std_listener.set_nonblocking(true)?;
        let port = std_listener.local_addr()?.port();
        let resets = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (r2, b2) = (resets.clone(), bytes.clone());
        let thread = std::thread::spawn(move || {
            let rt =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("listener");
                let upstream = SocketAddr::from((address, upstream_port));
                tokio::select! {
                    _ = rx => {}
                    _ = accept_loop(listener, upstream, fault, r2, b2) => {}
                }
            });
        });
        Ok(FaultProxy { port, resets, bytes, shutdown: Some(tx), thread: Some(thread) })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections reset so far.
    pub fn resets(&self) -> usize {
        self.resets.load(Ordering::SeqCst)
    }

    /// Bytes forwarded upstream so far.
    pub fn bytes_up(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    fault: Fault,
    resets: Arc<AtomicUsize>,
    bytes: Arc<AtomicU64>,
) {
    // StallFrom: until when (ms since the epoch) every request is held, once triggered.
    let stall_until = Arc::new(AtomicU64::new(0));
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        let (resets, bytes, stall_until) = (resets.clone(), bytes.clone(), stall_until.clone());
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else { return };
            let _ = pipe(client, server, fault, resets, bytes, stall_until).await;
        });
    }
}

async fn pipe(
    mut client: TcpStream,
    mut server: TcpStream,
    fault: Fault,
    resets: Arc<AtomicUsize>,
    bytes: Arc<AtomicU64>,
    stall_until: Arc<AtomicU64>,
) -> std::io::Result<()> {
    let (after, limited) = match fault {
        Fault::ResetFirst { after_bytes, times } => (after_bytes, resets.load(Ordering::SeqCst) < times),
        Fault::ResetAlways { after_bytes } => (after_bytes, true),
        Fault::LoseAnswer { .. } | Fault::StallFrom { .. } | Fault::StallRefusing { .. } | Fault::Refuse { .. } => {
            (u64::MAX, false)
        }
    };
    let stall = match fault {
        Fault::StallFrom { method, path_ends, secs } | Fault::StallRefusing { method, path_ends, secs, .. } => {
            Some((method, path_ends, secs))
        }
        _ => None,
    };
    let refuse = match fault {
        Fault::StallRefusing { refuse, refuse_path_ends, .. } => Some((refuse, refuse_path_ends)),
        Fault::Refuse { method, path_ends } => Some((method, path_ends)),
        _ => None,
    };
    let now_ms =
        || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    // Set when the request whose answer is to be lost went upstream.
    let lose = std::sync::atomic::AtomicBool::new(false);
    let reset = {
        let (mut cr, mut cw) = client.split();
        let (mut sr, mut sw) = server.split();
        let up = async {
            let mut buf = vec![0u8; 64 * 1024];
            let mut sent = 0u64;
            loop {
                let n = cr.read(&mut buf).await?;
                if n == 0 {
                    let _ = sw.shutdown().await;
                    return Ok::<bool, std::io::Error>(false);
                }
                sent += n as u64;
                if let Fault::LoseAnswer { method, path_ends, times } = fault
                    && request_line_matches(&buf[..n], method, path_ends)
                    && resets.fetch_add(1, Ordering::SeqCst) < times
                {
                    lose.store(true, Ordering::SeqCst);
                }
                if let Some((method, path_ends)) = refuse
                    && request_line_matches(&buf[..n], method, path_ends)
                {
                    // `resets` counts `Refuse`'s refusals; `StallRefusing`'s counts its stall.
                    if matches!(fault, Fault::Refuse { .. }) {
                        resets.fetch_add(1, Ordering::SeqCst);
                    }
                    return Ok(true);
                }
                if let Some((method, path_ends, secs)) = stall
                    && request_line_matches(&buf[..n], method, path_ends)
                    && resets.fetch_add(1, Ordering::SeqCst) == 0
                {
                    stall_until.store(now_ms() + secs * 1000, Ordering::SeqCst);
                }
                let wait = stall_until.load(Ordering::SeqCst).saturating_sub(now_ms());
                if wait > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                }
                if limited && sent > after {
                    let reset = match fault {
                        Fault::ResetFirst { times, .. } => resets.fetch_add(1, Ordering::SeqCst) < times,
                        Fault::ResetAlways { .. } => {
                            resets.fetch_add(1, Ordering::SeqCst);
                            true
                        }
                        Fault::LoseAnswer { .. }
                        | Fault::StallFrom { .. }
                        | Fault::StallRefusing { .. }
                        | Fault::Refuse { .. } => false,
                    };
                    if reset {
                        return Ok(true);
                    }
                }
                bytes.fetch_add(n as u64, Ordering::SeqCst);
                sw.write_all(&buf[..n]).await?;
            }
        };
        let down = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = sr.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<bool, std::io::Error>(false);
                }
                // HTTP/1.1 clients wait for an answer before the next request: these bytes answer
                // the request to lose.
                if lose.load(Ordering::SeqCst) {
                    return Ok(true);
                }
                cw.write_all(&buf[..n]).await?;
            }
        };
        tokio::pin!(up);
        tokio::pin!(down);
        tokio::select! {
            r = &mut up => match r? {
                true => true,
                false => matches!((&mut down).await, Ok(true)),
            },
            r = &mut down => matches!(r, Ok(true)),
        }
    };
    if reset {
        // SO_LINGER 0 + close sends RST: the client sees the connection reset mid-request. (With a
        // zero linger the close does not block, which is what the deprecation warns about.)
        #[allow(deprecated)]
        let _ = client.set_linger(Some(std::time::Duration::ZERO));
        drop(client);
        drop(server);
    }
    Ok(())
}

/// Whether `chunk` holds an HTTP request line `METHOD PATH HTTP/1.x` whose path ends with
/// `path_ends` (ignoring a query).
fn request_line_matches(chunk: &[u8], method: &str, path_ends: &str) -> bool {
    let text = String::from_utf8_lossy(&chunk[..chunk.len().min(4096)]);
    text.split("\r\n").any(|line| {
        let mut parts = line.split(' ');
        let (Some(m), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next()) else { return false };
        let path = path.split('?').next().unwrap_or_default();
        m == method && version.starts_with("HTTP/1") && path.ends_with(path_ends)
    })
}
