//! A lean HTTP/2 gRPC load generator: pre-encoded unary requests over raw h2
//! streams, so the generator costs far less per call than the server under test.
//! Every loop is bounded in count and in time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use prost::Message;
use tokio::net::TcpStream;

pub const AUTHORIZE_PATH: &str = "/keygate.v1.Authorizer/Authorize";

/// A gRPC frame: 1 byte "not compressed", 4 bytes length, the message.
pub fn grpc_frame(message: &impl Message) -> Bytes {
    let encoded = message.encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + encoded.len());
    frame.put_u8(0);
    frame.put_u32(encoded.len() as u32);
    frame.extend_from_slice(&encoded);
    frame.freeze()
}

pub async fn connect(address: SocketAddr) -> SendRequest<Bytes> {
    let tcp = TcpStream::connect(address).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// One unary call; returns the response message bytes (frame header stripped).
pub async fn call(
    client: &SendRequest<Bytes>,
    address: SocketAddr,
    body: Bytes,
) -> Result<Bytes, String> {
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{address}{AUTHORIZE_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let mut ready = client
        .clone()
        .ready()
        .await
        .map_err(|error| error.to_string())?;
    let (response, mut stream) = ready
        .send_request(request, false)
        .map_err(|error| error.to_string())?;
    stream
        .send_data(body, true)
        .map_err(|error| error.to_string())?;
    let response = response.await.map_err(|error| error.to_string())?;
    let header_status = response.headers().get("grpc-status").cloned();
    let mut body = response.into_body();
    let mut data = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|error| error.to_string())?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.map_err(|error| error.to_string())?;
    let status = trailers
        .and_then(|map| map.get("grpc-status").cloned())
        .or(header_status);
    if status.as_ref().map(|value| value.as_bytes()) != Some(b"0") {
        return Err(format!("grpc-status {status:?}"));
    }
    if data.len() < 5 {
        return Err("short response".into());
    }
    Ok(data.freeze().slice(5..))
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    pub requests: usize,
    pub errors: usize,
    pub seconds: f64,
    pub latencies_micros: Vec<u32>,
}

impl RunResult {
    pub fn requests_per_second(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    pub fn percentile(&self, fraction: f64) -> f64 {
        if self.latencies_micros.is_empty() {
            return f64::NAN;
        }
        let index = ((self.latencies_micros.len() - 1) as f64 * fraction).round() as usize;
        f64::from(self.latencies_micros[index])
    }
}

/// How a run drives the server.
#[derive(Clone, Copy)]
pub struct LoadShape {
    pub connections: usize,
    pub streams_per_connection: usize,
    pub duration: Duration,
    pub max_requests: usize,
}

/// Sends `bodies` (cycling, or each once with `once`) with bounded concurrency for
/// at most `shape.duration` and `shape.max_requests`. `check` sees every answer.
pub async fn run(
    address: SocketAddr,
    bodies: Arc<Vec<Bytes>>,
    shape: LoadShape,
    once: bool,
    check: fn(&[u8]) -> bool,
) -> RunResult {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + shape.duration;
    let limit = if once {
        bodies.len().min(shape.max_requests)
    } else {
        shape.max_requests
    };
    let mut workers = Vec::new();
    for _ in 0..shape.connections {
        let client = connect(address).await;
        for _ in 0..shape.streams_per_connection {
            let client = client.clone();
            let bodies = bodies.clone();
            let next = next.clone();
            workers.push(tokio::spawn(async move {
                let mut result = RunResult::default();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= limit || Instant::now() >= deadline {
                        return result;
                    }
                    let body = bodies[index % bodies.len()].clone();
                    let sent = Instant::now();
                    match call(&client, address, body).await {
                        Ok(answer) if check(&answer) => {
                            result.requests += 1;
                            result
                                .latencies_micros
                                .push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                        }
                        _ => result.errors += 1,
                    }
                }
            }));
        }
    }
    let mut total = RunResult::default();
    for worker in workers {
        let part = worker.await.unwrap();
        total.requests += part.requests;
        total.errors += part.errors;
        total.latencies_micros.extend(part.latencies_micros);
    }
    total.seconds = started.elapsed().as_secs_f64();
    total.latencies_micros.sort_unstable();
    total
}
