//! A throwaway rsyslog (Debian's `rsyslog`) receiving RFC 5424 messages over
//! TCP, for the tests of `repro audit export --format syslog --tcp`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The daemon Debian's `rsyslog` package installs.
pub const RSYSLOGD_BIN: &str = "rsyslogd";

/// Panic, loudly, when `rsyslogd` is not installed. Tests that need it are
/// `#[ignore = "needs ... rsyslog"]`.
pub fn require_rsyslog() {
    let found = Command::new(RSYSLOGD_BIN)
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        panic!(
            "this test needs `{RSYSLOGD_BIN}` (on PATH or in /usr/sbin) and it is missing\nhint: `apt-get install rsyslog` (ci/setup does it); run without `--run-ignored` to skip"
        );
    }
}

/// An `rsyslogd -n` listening with imtcp on `127.0.0.1:<free port>` that
/// writes every message it receives (`%rawmsg%`, one per line) to a file in
/// a temp dir, with its own config, pid file and work directory; killed
/// (and the dir removed) on drop.
pub struct Syslog {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Syslog {
    /// Start rsyslogd and wait until its port accepts connections.
    pub fn start() -> Syslog {
        require_rsyslog();
        let dir = tempfile::tempdir().expect("temp dir for rsyslog");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).expect("create rsyslog work dir");
        let messages = dir.path().join("messages.log");
        let config = format!(
            r#"global(workDirectory="{work}")
module(load="imtcp")
template(name="raw" type="string" string="%rawmsg%\n")
ruleset(name="repro") {{
    action(type="omfile" file="{messages}" template="raw")
}}
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="repro")
"#,
            work = work.display(),
            messages = messages.display(),
        );
        let config_path = dir.path().join("rsyslog.conf");
        std::fs::write(&config_path, config).expect("write rsyslog config");
        let log = std::fs::File::create(dir.path().join("rsyslogd.log")).expect("rsyslogd log");
        let child = Command::new(RSYSLOGD_BIN)
            .arg("-n")
            .arg("-f")
            .arg(&config_path)
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("rsyslogd log"))
            .stderr(log)
            .spawn()
            .expect("start rsyslogd");
        let mut s = Syslog { child, dir, port };
        s.wait_ready();
        s
    }

    fn wait_ready(&mut self) {
        let log = self.dir.path().join("rsyslogd.log");
        crate::wait_for_port(&mut self.child, self.port, "rsyslogd", &log);
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The file the received messages go to.
    pub fn messages_path(&self) -> PathBuf {
        self.dir.path().join("messages.log")
    }

    /// The messages received so far, one per element.
    pub fn messages(&self) -> Vec<String> {
        std::fs::read_to_string(self.messages_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Wait until at least `n` messages arrived; panics after 20 s.
    pub fn wait_for(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            if Instant::now() > deadline {
                panic!(
                    "rsyslog received {} of {n} messages within 20 s:\n{}\n--- rsyslogd log ---\n{}",
                    got.len(),
                    got.join("\n"),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// rsyslogd's own output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rsyslogd.log")).unwrap_or_default()
    }
}

impl Drop for Syslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
