//! A TCP proxy that injects one fault: it resets connections (RST) after a number of bytes sent
//! upstream. The only test double in the suite; it stands between the tool and a real server.

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
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
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
                let upstream = SocketAddr::from(([127, 0, 0, 1], upstream_port));
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
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        let (resets, bytes) = (resets.clone(), bytes.clone());
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else { return };
            let _ = pipe(client, server, fault, resets, bytes).await;
        });
    }
}

async fn pipe(
    mut client: TcpStream,
    mut server: TcpStream,
    fault: Fault,
    resets: Arc<AtomicUsize>,
    bytes: Arc<AtomicU64>,
) -> std::io::Result<()> {
    let (after, limited) = match fault {
        Fault::ResetFirst { after_bytes, times } => (after_bytes, resets.load(Ordering::SeqCst) < times),
        Fault::ResetAlways { after_bytes } => (after_bytes, true),
    };
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
                if limited && sent > after {
                    let reset = match fault {
                        Fault::ResetFirst { times, .. } => resets.fetch_add(1, Ordering::SeqCst) < times,
                        Fault::ResetAlways { .. } => {
                            resets.fetch_add(1, Ordering::SeqCst);
                            true
                        }
                    };
                    if reset {
                        return Ok(true);
                    }
                }
                bytes.fetch_add(n as u64, Ordering::SeqCst);
                sw.write_all(&buf[..n]).await?;
            }
        };
        let down = tokio::io::copy(&mut sr, &mut cw);
        tokio::pin!(up);
        tokio::pin!(down);
        tokio::select! {
            r = &mut up => match r? {
                true => true,
                false => { let _ = (&mut down).await; false }
            },
            _ = &mut down => false,
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
