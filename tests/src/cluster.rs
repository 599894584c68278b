//! Helpers for cluster tests: a real `redis-server` on a free port of 127.0.0.1 with a
//! directory of its own, killed when dropped, and chat-server nodes joined to it.
//!
//! There is no skipping: without `redis-server` on the PATH, every cluster test fails and
//! says how to install it.

use crate::{STEP, TestServer};
use chat_server::Config;
use chat_server::cluster::ClusterConfig;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` of the test's own.
pub struct Redis {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    /// Keep an append-only file (fsynced on every write), so a restart keeps every write
    /// Redis acknowledged.
    persistent: bool,
}

impl Redis {
    /// Starts a Redis that keeps nothing on disk.
    pub fn start() -> Redis {
        Redis::launch(false)
    }

    /// Starts a Redis with an append-only file fsynced on every write.
    pub fn start_persistent() -> Redis {
        Redis::launch(true)
    }

    fn launch(persistent: bool) -> Redis {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        let mut redis = Redis {
            port,
            dir,
            child: None,
            persistent,
        };
        redis.restart();
        redis
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL): what it acknowledged is on disk only if it is persistent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes it (SIGSTOP): connections stay open, commands already sent wait in its
    /// sockets and run when it is [`resumed`](Redis::resume).
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a paused Redis run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("redis-server is running");
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} redis-server failed");
    }

    /// Starts it again on the same port and directory (after [`Redis::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        let binary = which("redis-server").unwrap_or_else(|| {
            panic!(
                "redis-server is not installed, and the cluster tests need a real one: \
                 install it (Debian/Ubuntu: apt-get install -y redis-server) and run again"
            )
        });
        let mut command = Command::new(binary);
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--protected-mode", "no", "--loglevel", "warning"]);
        if self.persistent {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        // Ready once it answers PING.
        let deadline = Instant::now() + STEP;
        loop {
            if ping(self.port) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start in time"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A node's settings for this Redis.
    pub fn node(&self, id: &str, node_timeout: Duration) -> ClusterConfig {
        ClusterConfig {
            url: self.url(),
            node_id: id.into(),
            node_timeout,
            prefix: "chat:".into(),
            history_cache: chat_server::cluster::recent::DEFAULT_CAPACITY,
        }
    }

    /// Runs a command with redis-cli-like simplicity (raw RESP over TCP), returning the
    /// raw reply text: for tests that look at what is in Redis.
    pub fn command(&self, args: &[&str]) -> String {
        use std::io::{Read, Write};
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        stream.set_read_timeout(Some(STEP)).expect("timeout");
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream
            .write_all(request.as_bytes())
            .expect("write to redis");
        let mut reply = vec![0u8; 64 * 1024];
        let n = stream.read(&mut reply).expect("read from redis");
        String::from_utf8_lossy(&reply[..n]).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([std::path::PathBuf::from("/usr/bin"), "/usr/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 16];
    matches!(stream.read(&mut reply), Ok(n) if reply[..n].starts_with(b"+PONG"))
}

/// A node's settings for tests: no flood limit, this node id, this Redis.
pub fn node_config(redis: &Redis, id: &str, node_timeout: Duration) -> Config {
    Config {
        rate: 0.0,
        cluster: Some(redis.node(id, node_timeout)),
        ..Config::default()
    }
}

/// Starts `count` in-process nodes `n0`, `n1`, ... on `redis`.
pub async fn nodes(redis: &Redis, count: usize, node_timeout: Duration) -> Vec<TestServer> {
    let mut nodes = Vec::new();
    for i in 0..count {
        nodes.push(
            TestServer::with_config(node_config(redis, &format!("n{i}"), node_timeout)).await,
        );
    }
    nodes
}

/// The addresses of `nodes`.
pub fn addrs(nodes: &[TestServer]) -> Vec<SocketAddr> {
    nodes.iter().map(|n| n.addr).collect()
}
