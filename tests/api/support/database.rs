//! `TestDatabase`: a throwaway database of its own for each test, created on
//! the server `DATABASE_URL` names and dropped when the test ends, whether it
//! passed or failed.

use std::sync::Arc;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection, PgPool};

/// A fresh, empty database (no migrations: a server applies them at start).
/// Clones are handles to the same database, which is dropped with the last
/// of them; every `TestApp` on it holds one.
#[derive(Clone)]
pub struct TestDatabase {
    guard: Arc<OwnedDatabase>,
}

impl TestDatabase {
    /// A new database on the `DATABASE_URL` server (`.cargo/config.toml`
    /// sets it), named `keygate_test_<uuid>`.
    pub async fn create() -> TestDatabase {
        let url = std::env::var("DATABASE_URL").expect("DATABASE_URL names the test server");
        let server: PgConnectOptions = url.parse().expect("DATABASE_URL is a Postgres URL");
        TestDatabase::create_on(server).await
    }

    /// A new database on the server `server` connects to (its database is
    /// where the create and drop statements run).
    pub async fn create_on(server: PgConnectOptions) -> TestDatabase {
        let name = format!("keygate_test_{}", uuid::Uuid::new_v4().simple());
        let mut connection = PgConnection::connect_with(&server).await.unwrap();
        connection
            .execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .unwrap();
        connection.close().await.unwrap();
        TestDatabase {
            guard: Arc::new(OwnedDatabase { name, server }),
        }
    }

    pub fn name(&self) -> &str {
        &self.guard.name
    }

    /// Where to connect to this database.
    pub fn connect_options(&self) -> PgConnectOptions {
        self.guard.server.clone().database(&self.guard.name)
    }

    /// This database as a URL, for a `keygate` process.
    pub fn url(&self) -> String {
        let options = self.connect_options();
        format!(
            "postgres://{}@{}:{}/{}",
            options.get_username(),
            options.get_host(),
            options.get_port(),
            self.name()
        )
    }

    /// A new pool on this database.
    pub async fn pool(&self) -> PgPool {
        PgPool::connect_with(self.connect_options()).await.unwrap()
    }
}

/// The database itself, dropped when the last `TestDatabase` handle goes.
struct OwnedDatabase {
    name: String,
    server: PgConnectOptions,
}

impl Drop for OwnedDatabase {
    /// Runs on a thread of its own with its own runtime: this may run inside
    /// the test's runtime (which must not block on itself), or while a failed
    /// test unwinds. Never panics: a panic while unwinding aborts the run.
    fn drop(&mut self) {
        let name = self.name.clone();
        let server = self.server.clone();
        let dropping = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| error.to_string())?;
            runtime
                .block_on(drop_database(&server, &name))
                .map_err(|error| error.to_string())
        });
        match dropping.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("failed to drop test database {}: {error}", self.name),
            Err(_) => eprintln!("failed to drop test database {}: panicked", self.name),
        }
    }
}

/// Drops `name`, ending the sessions still connected to it (servers and
/// pools of the test that have not shut down yet).
async fn drop_database(server: &PgConnectOptions, name: &str) -> Result<(), sqlx::Error> {
    let mut connection = PgConnection::connect_with(server).await?;
    let statement = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
    connection.execute(statement.as_str()).await?;
    connection.close().await
}
