//! How the admin CLI and `keygate health` reach a server: the address, TLS
//! material and timeouts, and for the admin CLI the caller's token, which
//! comes only from `KEYGATE_TOKEN` (never a flag, so it stays out of shell
//! history and process listings).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Response, Status};

use super::output::OutputFormat;
use super::values::parse_timeout;
use super::CliError;
use crate::grpc::pb::key_service_client::KeyServiceClient;

/// The environment variable holding the caller's token.
pub const TOKEN_VARIABLE: &str = "KEYGATE_TOKEN";

/// Where the server is and how to reach it: flags shared by the admin CLI
/// and `keygate health`.
#[derive(Args, Clone, Debug)]
pub struct ServerArgs {
    /// Server to call: `http://host:port`, or `https://host:port` with --ca-cert.
    #[arg(
        long,
        global = true,
        env = "KEYGATE_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// CA bundle (PEM) that signed the server's certificate; needed for https.
    #[arg(long, global = true, env = "KEYGATE_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Name the server's certificate must hold, when not the server URL's host
    /// (e.g. the Service's DNS name while calling 127.0.0.1).
    #[arg(long, global = true, env = "KEYGATE_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
    /// Client certificate (PEM) for mutual TLS; needs --client-key.
    #[arg(
        long,
        global = true,
        env = "KEYGATE_CLIENT_CERT",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS; needs --client-cert.
    #[arg(
        long,
        global = true,
        env = "KEYGATE_CLIENT_KEY",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
}

/// Flags shared by every `keys` and `orgs` command.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Server and output")]
pub struct ClientArgs {
    #[command(flatten)]
    pub target: ServerArgs,
    /// Longest wait for the connection to the server (e.g. 5s).
    #[arg(long, global = true, env = "KEYGATE_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_timeout)]
    pub connect_timeout: Duration,
    /// Longest wait for each call's answer (e.g. 30s).
    #[arg(long, global = true, env = "KEYGATE_TIMEOUT", default_value = "30s", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// `table` for people, `json` (one document on stdout) for scripts.
    #[arg(long, global = true, env = "KEYGATE_OUTPUT", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// A connected KeyService client that sends the caller's token with every call.
pub struct Connection {
    client: KeyServiceClient<Channel>,
    /// `Bearer <token>`, marked sensitive so that it is never logged or indexed.
    authorization: AsciiMetadataValue,
    timeout: Duration,
}

impl Connection {
    /// Reads the token and TLS files, then connects. Nothing is sent before
    /// every setting has been checked.
    pub async fn open(args: &ClientArgs) -> Result<Connection, CliError> {
        let authorization = authorization_from_environment()?;
        let channel = connect(&args.target, args.connect_timeout).await?;
        Ok(Connection {
            client: KeyServiceClient::new(channel),
            authorization,
            timeout: args.timeout,
        })
    }

    /// Makes one call with the caller's token, bounded by `--timeout`.
    pub async fn call<Message, Answer, Call, Reply>(
        &self,
        message: Message,
        call: Call,
    ) -> Result<Answer, CliError>
    where
        Call: FnOnce(KeyServiceClient<Channel>, Request<Message>) -> Reply,
        Reply: Future<Output = Result<Response<Answer>, Status>>,
    {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        let reply = call(self.client.clone(), request);
        match tokio::time::timeout(self.timeout, reply).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(CliError::Status(status)),
            Err(_elapsed) => Err(CliError::Timeout(self.timeout)),
        }
    }
}

fn authorization_from_environment() -> Result<AsciiMetadataValue, CliError> {
    let token = match std::env::var(TOKEN_VARIABLE) {
        Ok(token) => token,
        Err(std::env::VarError::NotPresent) => {
            return Err(CliError::Setup(format!(
                "{TOKEN_VARIABLE} is not set: export the token of a key allowed to make this call"
            )))
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(CliError::Setup(format!(
                "{TOKEN_VARIABLE} is not valid UTF-8"
            )))
        }
    };
    let token = token.trim();
    if token.is_empty() {
        return Err(CliError::Setup(format!("{TOKEN_VARIABLE} is empty")));
    }
    // The error from the header parser is not shown: it could quote the token.
    let mut value = AsciiMetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
        CliError::Setup(format!(
            "{TOKEN_VARIABLE} holds characters a token never has"
        ))
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Checks the settings, reads the TLS files, then connects (waiting at most
/// `connect_timeout`).
pub async fn connect(target: &ServerArgs, connect_timeout: Duration) -> Result<Channel, CliError> {
    endpoint(target, connect_timeout)?
        .connect()
        .await
        .map_err(|error| CliError::Connect {
            server: target.server.clone(),
            cause: error_chain(&error),
        })
}

fn endpoint(target: &ServerArgs, connect_timeout: Duration) -> Result<Endpoint, CliError> {
    let endpoint = Endpoint::from_shared(target.server.clone())
        .map_err(|_| {
            CliError::Setup(format!(
                "--server (KEYGATE_SERVER) {:?} is not a URL like http://127.0.0.1:50051",
                target.server
            ))
        })?
        .connect_timeout(connect_timeout);
    let scheme = endpoint.uri().scheme_str().unwrap_or_default().to_owned();
    match scheme.as_str() {
        "http" => {
            let tls_flags = target.ca_cert.is_some()
                || target.client_cert.is_some()
                || target.tls_server_name.is_some();
            if tls_flags {
                return Err(CliError::Setup(
                    "--ca-cert, --client-cert and --tls-server-name need an https:// server"
                        .to_owned(),
                ));
            }
            Ok(endpoint)
        }
        "https" => endpoint.tls_config(tls_config(target)?).map_err(|error| {
            CliError::Setup(format!("cannot set up TLS: {}", error_chain(&error)))
        }),
        _ => Err(CliError::Setup(format!(
            "--server (KEYGATE_SERVER) must start with http:// or https://, not {:?}",
            target.server
        ))),
    }
}

fn tls_config(target: &ServerArgs) -> Result<ClientTlsConfig, CliError> {
    let Some(ca_path) = &target.ca_cert else {
        return Err(CliError::Setup(
            "an https:// server needs --ca-cert (KEYGATE_CA_CERT): the CA that signed its certificate"
                .to_owned(),
        ));
    };
    let ca = Certificate::from_pem(read_pem("--ca-cert (KEYGATE_CA_CERT)", ca_path)?);
    let mut config = ClientTlsConfig::new().ca_certificate(ca);
    if let Some(name) = &target.tls_server_name {
        config = config.domain_name(name);
    }
    let (Some(cert_path), Some(key_path)) = (&target.client_cert, &target.client_key) else {
        return Ok(config);
    };
    let identity = Identity::from_pem(
        read_pem("--client-cert (KEYGATE_CLIENT_CERT)", cert_path)?,
        read_pem("--client-key (KEYGATE_CLIENT_KEY)", key_path)?,
    );
    Ok(config.identity(identity))
}

fn read_pem(setting: &str, path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|error| {
        CliError::Setup(format!(
            "{setting}: cannot read {}: {error}",
            path.display()
        ))
    })
}

/// An error and its causes on one line: tonic's transport errors say little
/// at the top ("transport error") and the useful part in their sources.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !line.ends_with(&cause_text) {
            line.push_str(": ");
            line.push_str(&cause_text);
        }
        source = cause.source();
    }
    line
}
