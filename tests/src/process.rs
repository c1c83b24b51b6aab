//! Child processes the harness owns: started with a parent-death signal, logged to a file, stopped
//! by PID (SIGTERM, then SIGKILL) when dropped — also when a test panics.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A running server process. Dropping it stops it.
pub struct Process {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    /// Starts `program args...`, output appended to `log`. On Linux the child gets SIGKILL if the
    /// thread that started it goes away (util-linux `setpriv --pdeathsig`), so nothing outlives a
    /// killed test run.
    pub fn spawn(
        name: &str,
        program: impl AsRef<Path>,
        args: &[String],
        log: &Path,
        env: &[(&str, String)],
    ) -> Result<Process> {
        let program = program.as_ref();
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = if Path::new("/usr/bin/setpriv").exists() {
            let mut c = Command::new("/usr/bin/setpriv");
            c.arg("--pdeathsig").arg("KILL").arg("--").arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().with_context(|| format!("starting {name} ({})", program.display()))?;
        Ok(Process { name: name.to_string(), child: Some(child), log: log.to_path_buf() })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Fails with the tail of the log if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!("{} exited ({status}); last log lines:\n{}", self.name, tail(&self.log, 30));
        }
        Ok(())
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else { return };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILL at once (for crash tests).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Waits until `check` succeeds, the process is alive, and `timeout` has not passed.
pub fn wait_for(what: &str, process: &mut Process, timeout: Duration, mut check: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        process.check_alive()?;
        if check() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{what} not ready after {timeout:?}; last log lines of {}:\n{}",
                process.log.display(),
                tail(&process.log, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn port_open(port: u16) -> bool {
    port_open_on(std::net::Ipv4Addr::LOCALHOST, port)
}

pub fn port_open_on(address: std::net::Ipv4Addr, port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from((address, port)), Duration::from_millis(200)).is_ok()
}

/// `${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-backup`: where tests/env/install.sh put the servers.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"))
        .join("kubectl-backup")
}

/// A binary from the cache, with a clear error pointing at the installer when it is missing.
pub fn cached_tool(relative: &str) -> Result<PathBuf> {
    let p = cache_dir().join(relative);
    if !p.exists() {
        bail!("{} is missing: run tests/env/install.sh first", p.display());
    }
    Ok(p)
}

pub fn find_glob_tool(dir: &Path, suffix: &str) -> Result<PathBuf> {
    fn walk(dir: &Path, suffix: &str, depth: usize) -> Option<PathBuf> {
        if depth > 8 {
            return None;
        }
        for e in std::fs::read_dir(dir).ok()?.flatten() {
            let p = e.path();
            if p.to_string_lossy().ends_with(suffix) && p.is_file() {
                return Some(p);
            }
            if p.is_dir()
                && let Some(found) = walk(&p, suffix, depth + 1)
            {
                return Some(found);
            }
        }
        None
    }
    walk(dir, suffix, 0).with_context(|| format!("no {suffix} under {}: run tests/env/install.sh first", dir.display()))
}
