//! `PrivatePostgres`: a throwaway Postgres cluster of the test's own, run as
//! the `postgres` user on a free loopback port, so that a test can stop and
//! start the database its server uses without touching the shared one.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

use sqlx::postgres::PgConnectOptions;

/// A private cluster, removed on drop.
pub struct PrivatePostgres {
    directory: PathBuf,
    port: u16,
    bin: PathBuf,
    /// Extra `-c name=value` server settings.
    settings: Vec<String>,
}

fn postgres_bin() -> Option<PathBuf> {
    let root = PathBuf::from("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(&root)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .collect();
    versions.sort();
    versions.pop().map(|version| version.join("bin"))
}

fn as_postgres(program: &PathBuf, arguments: &[&str]) -> bool {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(arguments)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

impl PrivatePostgres {
    /// A new cluster, started.
    pub fn start() -> PrivatePostgres {
        PrivatePostgres::start_with(&[])
    }

    /// A new cluster started with server settings (`log_statement=all`), each
    /// without spaces.
    pub fn start_with(settings: &[&str]) -> PrivatePostgres {
        let bin = postgres_bin().expect("no PostgreSQL binaries under /usr/lib/postgresql");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let directory =
            std::env::temp_dir().join(format!("keygate-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&directory).unwrap();
        assert!(Command::new("chown")
            .arg("postgres")
            .arg(&directory)
            .status()
            .unwrap()
            .success());
        let data = directory.join("data");
        assert!(as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust"
            ]
        ));
        let cluster = PrivatePostgres {
            directory,
            port,
            bin,
            settings: settings.iter().map(|setting| setting.to_string()).collect(),
        };
        cluster.start_server();
        cluster
    }

    pub fn start_server(&self) {
        let data = self.directory.join("data");
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.directory.display()
        );
        for setting in &self.settings {
            options.push_str(&format!(" -c {setting}"));
        }
        let log = self.log_path();
        assert!(as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start"
            ],
        ));
    }

    pub fn stop_server(&self) {
        let data = self.directory.join("data");
        assert!(as_postgres(
            &self.bin.join("pg_ctl"),
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"]
        ));
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.directory.join("log")
    }

    /// The cluster's own `postgres` database, where test databases are made.
    pub fn connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username("postgres")
            .database("postgres")
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.directory.join("data");
        let _ = as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}
