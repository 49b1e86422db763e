//! What `migrate`, `bootstrap` and `serve` do to the schema, and with which
//! rights: a replica's runtime role without DDL rights (the chart's
//! `migrations.mode: job`) runs `bootstrap` and `serve` on a migrated database,
//! with or without `--no-migrate`.

use keygate::grpc::pb;
use keygate::grpc::pb::key_service_client::KeyServiceClient;
use sqlx::{Connection, Executor, PgConnection};

use crate::support::cli_runner::printed_token;
use crate::support::process::{keygate, ServerProcess};
use crate::support::{authed, TestDatabase};

/// A login role holding only the grants docs/operations.md lists for the
/// runtime role, on one database; dropped with its grants when the test ends.
struct RuntimeRole {
    name: String,
    database: TestDatabase,
}

impl RuntimeRole {
    async fn create(database: &TestDatabase) -> RuntimeRole {
        let name = format!(
            "keygate_runtime_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let role = RuntimeRole {
            name,
            database: database.clone(),
        };
        let mut owner = PgConnection::connect_with(&database.connect_options())
            .await
            .unwrap();
        let (role_name, database_name) = (&role.name, database.name());
        for statement in [
            format!("CREATE ROLE \"{role_name}\" LOGIN"),
            format!("GRANT CONNECT ON DATABASE \"{database_name}\" TO \"{role_name}\""),
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC".to_owned(),
            format!("GRANT USAGE ON SCHEMA public TO \"{role_name}\""),
            format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO \"{role_name}\""
            ),
            format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO \"{role_name}\""),
        ] {
            owner.execute(statement.as_str()).await.unwrap();
        }
        owner.close().await.unwrap();
        role
    }

    /// The database's URL, logging in as this role.
    fn url(&self) -> String {
        let options = self.database.connect_options();
        format!(
            "postgres://{}@{}:{}/{}",
            self.name,
            options.get_host(),
            options.get_port(),
            self.database.name()
        )
    }

    /// Shows that the role really lacks DDL rights: the error the migrator
    /// stopped on before bootstrap learned to leave a current schema alone.
    async fn assert_cannot_create_tables(&self) {
        let options = self.database.connect_options().username(&self.name);
        let mut connection = PgConnection::connect_with(&options).await.unwrap();
        let refused = connection
            .execute("CREATE TABLE IF NOT EXISTS _sqlx_migrations (version bigint)")
            .await
            .unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("permission denied for schema public"),
            "{refused}"
        );
        connection.close().await.unwrap();
    }
}

impl Drop for RuntimeRole {
    /// Revokes the role's grants and drops it, on a thread of its own (as
    /// `TestDatabase` does). Never panics.
    fn drop(&mut self) {
        let name = self.name.clone();
        let database = self.database.connect_options();
        let dropping = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| error.to_string())?;
            runtime
                .block_on(async {
                    let mut connection = PgConnection::connect_with(&database).await?;
                    connection
                        .execute(format!("DROP OWNED BY \"{name}\"").as_str())
                        .await?;
                    connection
                        .execute(format!("DROP ROLE \"{name}\"").as_str())
                        .await?;
                    connection.close().await
                })
                .map_err(|error| error.to_string())
        });
        match dropping.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("failed to drop role {}: {error}", self.name),
            Err(_) => eprintln!("failed to drop role {}: panicked", self.name),
        }
    }
}

/// Environment variables set for one run of the binary.
type Variables = &'static [(&'static str, &'static str)];

/// A new database migrated by `keygate migrate` as its owner.
async fn migrated_database() -> TestDatabase {
    let database = TestDatabase::create().await;
    let migrated = keygate(&database.url(), &["migrate"])
        .output()
        .await
        .unwrap();
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    database
}

#[tokio::test]
async fn bootstrap_runs_as_a_runtime_role_without_ddl_rights() {
    let cases: [(&str, &[&str], Variables); 3] = [
        ("--no-migrate", &["bootstrap", "--no-migrate"], &[]),
        (
            "KEYGATE_NO_MIGRATE=true",
            &["bootstrap"],
            &[("KEYGATE_NO_MIGRATE", "true")],
        ),
        ("neither, on a current schema", &["bootstrap"], &[]),
    ];
    for (case, arguments, environment) in cases {
        let database = migrated_database().await;
        let role = RuntimeRole::create(&database).await;
        role.assert_cannot_create_tables().await;
        let mut command = keygate(&role.url(), arguments);
        command.env_remove("KEYGATE_NO_MIGRATE");
        command.envs(environment.iter().copied());
        let bootstrapped = command.output().await.unwrap();
        assert!(
            bootstrapped.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&bootstrapped.stderr)
        );
        let token = printed_token(&String::from_utf8(bootstrapped.stdout).unwrap());
        assert!(token.starts_with("kg_live_"), "{case}: {token}");
    }
}

#[tokio::test]
async fn bootstrap_with_no_migrate_leaves_an_empty_database_alone() {
    let cases: [(&[&str], Variables); 2] = [
        (&["bootstrap", "--no-migrate"], &[]),
        (&["bootstrap"], &[("KEYGATE_NO_MIGRATE", "true")]),
    ];
    for (arguments, environment) in cases {
        let database = TestDatabase::create().await;
        let mut command = keygate(&database.url(), arguments);
        command.envs(environment.iter().copied());
        let refused = command.output().await.unwrap();
        let case = format!("{arguments:?} {environment:?}");
        assert!(
            !refused.status.success(),
            "{case}: bootstrap migrated anyway"
        );
        assert_eq!(refused.stdout, b"", "{case}: a token without a key");
        let pool = database.pool().await;
        let tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(tables, 0, "{case}: tables were created");
        pool.close().await;
    }
}

#[tokio::test]
async fn serve_runs_as_a_runtime_role_without_ddl_rights() {
    let database = migrated_database().await;
    let role = RuntimeRole::create(&database).await;
    let bootstrapped = keygate(&role.url(), &["bootstrap", "--no-migrate"])
        .output()
        .await
        .unwrap();
    assert!(bootstrapped.status.success());
    let admin_token = printed_token(&String::from_utf8(bootstrapped.stdout).unwrap());
    for (case, arguments) in [
        (
            "no migrate",
            ["serve", "--listen", "127.0.0.1:0", "--no-migrate"].as_slice(),
        ),
        (
            "current schema",
            ["serve", "--listen", "127.0.0.1:0"].as_slice(),
        ),
    ] {
        let mut command = keygate(&role.url(), arguments);
        command.env_remove("KEYGATE_NO_MIGRATE");
        let mut server = ServerProcess::spawn(command).await;
        // A write, its event and the replica's own rows: the runtime grants suffice.
        let mut client = KeyServiceClient::connect(format!("http://{}", server.address))
            .await
            .unwrap();
        let request = pb::CreateOrganizationRequest {
            display_name: format!("Acme {case}"),
        };
        client
            .create_organization(authed(&admin_token, request))
            .await
            .unwrap();
        let exit = server.stop().await;
        assert!(exit.success(), "{case}: server exit {exit:?}");
    }
}

#[tokio::test]
async fn migrate_creates_a_missing_database() {
    let server = TestDatabase::create().await;
    let name = format!("keygate_test_{}", uuid::Uuid::new_v4().simple());
    let url = server.url().replace(server.name(), &name);
    let migrated = keygate(&url, &["migrate"]).output().await.unwrap();
    let mut connection = PgConnection::connect_with(&server.connect_options())
        .await
        .unwrap();
    let created: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut connection)
            .await
            .unwrap();
    connection
        .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
        .await
        .unwrap();
    connection.close().await.unwrap();
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    assert!(created, "migrate did not create the database");
}
