//! `keygate health`: asks a server's gRPC health service about one service
//! and exits 0 only when it is SERVING. Kubernetes exec probes and the image's
//! HEALTHCHECK use it where the kubelet's own gRPC probe cannot go (TLS,
//! mutual TLS). It sends no token: the health service needs none.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::connection::{connect, ServerArgs};
use super::values::parse_timeout;
use super::CliError;

#[derive(Args)]
pub struct HealthArgs {
    #[command(flatten)]
    pub target: ServerArgs,
    /// Health service to ask about: "" (the server as a whole, for readiness),
    /// `liveness`, `keygate.events`, `keygate.v1.Authorizer`, ...
    #[arg(long, default_value = "")]
    pub service: String,
    /// Longest wait for the connection and the answer together (e.g. 3s).
    #[arg(long, default_value = "5s", value_parser = parse_timeout)]
    pub timeout: Duration,
}

/// Why the answer is not "SERVING".
#[derive(Debug, thiserror::Error)]
enum Unhealthy {
    /// A setting, the connection, or an error status.
    #[error(transparent)]
    Call(#[from] CliError),
    #[error("service {service:?} is {status}")]
    NotServing {
        service: String,
        status: &'static str,
    },
    #[error("service {0:?} is unknown to the server")]
    UnknownService(String),
    #[error("no answer within {0:?} (--timeout)")]
    Timeout(Duration),
}

/// Runs `keygate health`: prints `SERVING` and exits 0, or prints one
/// `error: …` line and exits 1, whatever went wrong (container health checks
/// read any other code as a broken check, not as unhealthy).
pub async fn run_health(args: HealthArgs) -> ExitCode {
    match check(&args).await {
        Ok(()) => {
            let _ = writeln!(std::io::stdout(), "SERVING");
            ExitCode::SUCCESS
        }
        Err(unhealthy) => {
            let line = unhealthy.to_string().replace(['\r', '\n'], " ");
            let _ = writeln!(std::io::stderr(), "error: {line}");
            ExitCode::FAILURE
        }
    }
}

async fn check(args: &HealthArgs) -> Result<(), Unhealthy> {
    let asked = async {
        let channel = connect(&args.target, args.timeout).await?;
        let request = HealthCheckRequest {
            service: args.service.clone(),
        };
        match HealthClient::new(channel).check(request).await {
            Ok(response) => Ok(response.into_inner().status()),
            Err(status) if status.code() == Code::NotFound => {
                Err(Unhealthy::UnknownService(args.service.clone()))
            }
            Err(status) => Err(Unhealthy::Call(CliError::Status(status))),
        }
    };
    let status = tokio::time::timeout(args.timeout, asked)
        .await
        .map_err(|_elapsed| Unhealthy::Timeout(args.timeout))??;
    if status == ServingStatus::Serving {
        return Ok(());
    }
    Err(Unhealthy::NotServing {
        service: args.service.clone(),
        status: status.as_str_name(),
    })
}
