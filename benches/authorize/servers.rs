//! The processes under test: the real `keygate` binary and a no-op Authorizer
//! with the same message shapes and runtime, each pinned to one CPU, plus the
//! throwaway database they share.

use std::net::SocketAddr;
use std::process::Stdio;

use keygate::domain::hashing::{HashingParams, SecretHasher};
use keygate::domain::token::{Environment, KeyId, Token, TokenPrefix};
use keygate::grpc::pb::{self, authorizer_server};
use secrecy::ExposeSecret;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Pins this process to one CPU (best effort: warns when `taskset` is missing).
pub fn pin_self_to_cpu(cpu: usize) {
    if !crate::cpu::set_affinity(std::process::id(), &cpu.to_string()) {
        eprintln!("warning: could not pin the load generator to CPU {cpu}");
    }
}

pub struct BenchDatabase {
    pub url: String,
    server: PgConnectOptions,
    name: String,
    pool: PgPool,
    organization_id: uuid::Uuid,
}

impl BenchDatabase {
    pub async fn create() -> BenchDatabase {
        let server_url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let server: PgConnectOptions = server_url.parse().unwrap();
        let name = format!("keygate_bench_{}", uuid::Uuid::new_v4().simple());
        let mut connection = server.connect().await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut connection)
            .await
            .unwrap();
        connection.close().await.unwrap();
        let options = server.clone().database(&name);
        let url = format!(
            "postgres://{}@{}:{}/{}",
            options.get_username(),
            options.get_host(),
            options.get_port(),
            name
        );
        let pool = PgPool::connect_with(options).await.unwrap();
        keygate::store::migrate(&pool).await.unwrap();
        let organization_id = keygate::store::organizations::insert_organization(&pool, "bench")
            .await
            .unwrap()
            .id;
        BenchDatabase {
            url,
            server,
            name,
            pool,
            organization_id,
        }
    }

    /// The process id of one of the database server's backends (its parent is
    /// the server's postmaster), to read the database server's CPU time.
    pub async fn backend_pid(&self) -> u32 {
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&self.pool)
            .await
            .unwrap();
        u32::try_from(pid).unwrap()
    }

    /// Inserts `count` keys holding `customers:read`, each with its own secret
    /// hashed with `params`; returns their tokens.
    pub async fn seed_keys(&self, count: usize, params: HashingParams) -> Vec<String> {
        let hasher = SecretHasher::new(params, 2).unwrap();
        let prefix = TokenPrefix::default();
        let mut tokens = Vec::with_capacity(count);
        for chunk_start in (0..count).step_by(5_000) {
            let chunk = (count - chunk_start).min(5_000);
            let mut ids = Vec::with_capacity(chunk);
            let mut hashes = Vec::with_capacity(chunk);
            for _ in 0..chunk {
                let id = KeyId::generate();
                let issued = Token::issue(&prefix, Environment::Live, &id);
                hashes.push(
                    hasher
                        .hash(&issued.secret)
                        .await
                        .unwrap()
                        .as_str()
                        .to_owned(),
                );
                ids.push(id.as_uuid());
                tokens.push(issued.token.expose_secret().to_owned());
            }
            sqlx::query(
                "INSERT INTO api_keys (id, organization_id, kind, environment, name, scopes, secret_hash) \
                 SELECT id, $3, 'organization', 'live', 'bench', '{customers:read}', hash \
                 FROM UNNEST($1::uuid[], $2::text[]) AS seeded(id, hash)",
            )
            .bind(&ids)
            .bind(&hashes)
            .bind(self.organization_id)
            .execute(&self.pool)
            .await
            .unwrap();
        }
        tokens
    }

    pub async fn drop_database(self) {
        self.pool.close().await;
        let mut connection = self.server.connect().await.unwrap();
        sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .execute(&mut connection)
            .await
            .unwrap();
    }
}

/// How long a spawned server may take to report its listening address (a
/// replica migrates nothing here, but a loaded machine can be slow to start).
const SERVER_READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// A server process this bench started; killed (by its own pid) when dropped.
pub struct Child {
    pub address: SocketAddr,
    process: tokio::process::Child,
}

impl Child {
    async fn spawn(mut command: Command, marker: &str) -> Child {
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut process = command.spawn().unwrap();
        let stderr = process.stderr.take().unwrap();
        let stdout = process.stdout.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let mut out_lines = BufReader::new(stdout).lines();
        let ready = async {
            loop {
                let line = tokio::select! {
                    line = lines.next_line() => line.unwrap(),
                    line = out_lines.next_line() => line.unwrap(),
                };
                let line = line.expect("server exited before it was ready");
                if let Some(start) = line.find(marker) {
                    let rest = &line[start + marker.len()..];
                    break rest.split_whitespace().next().unwrap().parse().unwrap();
                }
            }
        };
        let address: SocketAddr = tokio::time::timeout(SERVER_READY_TIMEOUT, ready)
            .await
            .expect("server did not report its address in time");
        // Keep draining output so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        tokio::spawn(async move { while let Ok(Some(_)) = out_lines.next_line().await {} });
        Child { address, process }
    }

    /// A replica of this build's `keygate` binary, or of the one
    /// `KEYGATE_BENCH_BINARY` names (to compare another build in one session).
    pub async fn keygate(database_url: &str, cpu: usize) -> Child {
        let mut command = Command::new("taskset");
        command
            .args([
                "-c",
                &cpu.to_string(),
                &std::env::var("KEYGATE_BENCH_BINARY")
                    .unwrap_or_else(|_| env!("CARGO_BIN_EXE_keygate").to_owned()),
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--no-migrate",
            ])
            .args(["--cache-capacity", "200000"])
            // Loopback only, and a free port per replica.
            .args(["--metrics-listen", "127.0.0.1:0"])
            .env("KEYGATE_DATABASE_URL", database_url)
            .env("RUST_LOG", "info");
        Child::spawn(command, "address=").await
    }

    pub async fn noop(cpu: usize) -> Child {
        let mut command = Command::new("taskset");
        command
            .args(["-c", &cpu.to_string()])
            .arg(std::env::current_exe().unwrap())
            .arg("noop-server");
        Child::spawn(command, "listening ").await
    }

    /// The server's process id (`taskset` execs it, keeping its own).
    pub fn pid(&self) -> Option<u32> {
        self.process.id()
    }

    /// Resident memory of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let Some(pid) = self.pid() else {
            return 0;
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    }
}

/// Answers every Authorize with the same allowed decision a warm Keygate gives.
struct NoopAuthorizer {
    answer: pb::Decision,
}

#[tonic::async_trait]
impl authorizer_server::Authorizer for NoopAuthorizer {
    async fn authorize(
        &self,
        _request: tonic::Request<pb::AuthorizeRequest>,
    ) -> Result<tonic::Response<pb::Decision>, tonic::Status> {
        Ok(tonic::Response::new(self.answer.clone()))
    }
}

/// The no-op server, with Keygate's runtime (multi-thread, default workers),
/// transport settings (TCP_NODELAY) and log subscriber (without one, every
/// span inside tonic and h2 would fall back to the `log` crate, a cost Keygate
/// does not pay).
pub fn run_noop_server() {
    let _telemetry = keygate::server::telemetry::init(
        keygate::server::telemetry::LogStyle::Text,
        tracing_subscriber::filter::LevelFilter::INFO,
        keygate::server::telemetry::TraceOptions::default(),
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("listening {}", listener.local_addr().unwrap());
        let answer = pb::Decision {
            allowed: true,
            reason: pb::Reason::Ok.into(),
            permission: "customers:read".into(),
            route: "/customers/{id}".into(),
            path_params: [("id".to_owned(), "cus_123".to_owned())].into(),
            key_id: KeyId::generate().to_string(),
            organization_id: uuid::Uuid::new_v4().to_string(),
            environment: pb::Environment::Live.into(),
            kind: pb::KeyKind::Organization.into(),
            metadata: Default::default(),
            secret: pb::SecretSlot::Current.into(),
            http_status: 200,
        };
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        tonic::transport::Server::builder()
            .add_service(authorizer_server::AuthorizerServer::new(NoopAuthorizer {
                answer,
            }))
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
}
