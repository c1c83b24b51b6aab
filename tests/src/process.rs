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
    free_port_on(std::net::Ipv4Addr::LOCALHOST)
}

/// A port free on `address` right now. A server that will bind another address (a node network's)
/// takes its port from that address: a port free on 127.0.0.1 may be in use there.
pub fn free_port_on(address: std::net::Ipv4Addr) -> u16 {
    let l = TcpListener::bind((address, 0)).unwrap_or_else(|e| panic!("binding {address}:0: {e}"));
    l.local_addr().expect("local addr").port()
}

/// Calls `start` again, up to three more times, when it failed because another process took its
/// port between `free_port_on` and the server's bind (tests run in parallel): the error, or what
/// this try appended to the server's `log`, says the address is already in use.
pub fn retry_on_port_clash<T>(log: &Path, mut start: impl FnMut() -> Result<T>) -> Result<T> {
    let clash = |text: &[u8]| String::from_utf8_lossy(text).to_ascii_lowercase().contains("address already in use");
    let mut tries = 0;
    loop {
        let logged_before = std::fs::metadata(log).map(|m| m.len() as usize).unwrap_or(0);
        match start() {
            Err(e)
                if tries < 3
                    && (clash(format!("{e:#}").as_bytes())
                        || std::fs::read(log).is_ok_and(|l| clash(l.get(logged_before..).unwrap_or_default()))) =>
            {
                tries += 1
            }
            started => return started,
        }
    }
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

/// The TCP connections process `pid` has open to `peer`, each duplicated into this process
/// (pidfd_getfd: Linux 5.6, and the rights to trace that process, which the tests have over their
/// own children), to ask what the process set on them.
pub fn connections_to(pid: u32, peer: SocketAddr) -> Result<Vec<TcpStream>> {
    use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags, pidfd_getfd, pidfd_open};
    let pid = Pid::from_raw(pid as i32).context("a process id")?;
    let pidfd = pidfd_open(pid, PidfdFlags::empty()).with_context(|| format!("pidfd_open({pid:?})"))?;
    let fds = std::fs::read_dir(format!("/proc/{}/fd", pid.as_raw_nonzero()))?;
    Ok(fds
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|fd| pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty()).ok())
        .filter(|fd| rustix::fs::fstat(fd).is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_socket()))
        .map(TcpStream::from)
        .filter(|s| s.peer_addr().is_ok_and(|a| a == peer))
        .collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_is_tried_again_only_when_its_port_was_taken() {
        let log = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(log.path(), "an earlier start: Address already in use (os error 98)\n").unwrap();

        // Another failure is returned at once, even with an earlier clash in the log.
        let mut calls = 0;
        let r: Result<()> = retry_on_port_clash(log.path(), || {
            calls += 1;
            bail!("s3s-fs exited (exit status: 2)")
        });
        assert_eq!((calls, format!("{:#}", r.unwrap_err())), (1, "s3s-fs exited (exit status: 2)".to_string()));

        // A clash this try logged means another try; the second start's result is returned.
        let mut calls = 0;
        let r = retry_on_port_clash(log.path(), || {
            calls += 1;
            if calls == 1 {
                let mut f = File::options().append(true).open(log.path())?;
                std::io::Write::write_all(
                    &mut f,
                    b"Error: Os { code: 98, kind: AddrInUse, message: \"Address already in use\" }\n",
                )?;
                bail!("s3s-fs exited (exit status: 1)")
            }
            Ok(calls)
        });
        assert_eq!(r.unwrap(), 2);

        // At most three more tries.
        let mut calls = 0;
        let r: Result<()> = retry_on_port_clash(log.path(), || {
            calls += 1;
            bail!("listen tcp 127.0.0.1:2379: bind: address already in use")
        });
        assert!(r.is_err());
        assert_eq!(calls, 4);
    }
}
