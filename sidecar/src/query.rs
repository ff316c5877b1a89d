//! The daemon's query socket: read-only questions about what it holds in
//! memory, one request line and one JSON answer per connection.
//! `route-view` (for `diff --against fpm`) answers the routes the RIB
//! wants programmed; `route-for ADDR` (for `lookup`) the programmed prefix
//! the maps answer ADDR from. The socket is root-only (0600) and sits
//! beside the state file. A request it cannot answer gets a JSON object
//! too: `{"error": "...", "request": "..."}`.

use std::{
    io::{Read, Write},
    net::IpAddr,
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::UnixListener,
    sync::{mpsc, oneshot},
};

/// The request for [`RouteView`].
pub const ROUTE_VIEW: &str = "route-view";
/// The request for [`RouteMatch`], followed by an address.
pub const ROUTE_FOR: &str = "route-for";
/// A request line longer than this is refused.
const MAX_REQUEST: u64 = 256;

pub use pf_control::controller::{RouteMatch, RouteView};

/// A checked request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    RouteView,
    RouteFor(IpAddr),
}

/// A request handed to the daemon's loop, with where its answer goes.
pub enum Query {
    RouteView(oneshot::Sender<RouteView>),
    RouteFor(IpAddr, oneshot::Sender<RouteMatch>),
}

/// What the socket answers a request it cannot serve.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorAnswer {
    pub error: String,
    /// The request as received (lossily decoded, at most 256 bytes).
    pub request: String,
}

fn error_json(error: impl Into<String>, request: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&ErrorAnswer {
        error: error.into(),
        request: String::from_utf8_lossy(request).into_owned(),
    })
    .unwrap_or_else(|_| b"{\"error\":\"unknown\",\"request\":\"\"}".to_vec())
}

const REQUESTS: &str = "\"route-view\" or \"route-for ADDRESS\"";

/// A request line, checked: the request, or the JSON error to answer
/// instead.
fn parse_request(line: &[u8]) -> Result<Request, Vec<u8>> {
    let complete = line.ends_with(b"\n");
    if !complete && line.len() as u64 >= MAX_REQUEST {
        return Err(error_json(
            format!("the request is longer than {MAX_REQUEST} bytes"),
            line,
        ));
    }
    let Ok(text) = std::str::from_utf8(line) else {
        return Err(error_json("the request is not UTF-8 text", line));
    };
    let text = text.trim();
    match text.split_once(' ') {
        None if text == ROUTE_VIEW => Ok(Request::RouteView),
        Some((ROUTE_FOR, address)) => address
            .trim()
            .parse()
            .map(Request::RouteFor)
            .map_err(|_| error_json(format!("{address:?} is not an IP address"), line)),
        None if text.is_empty() => Err(error_json(
            format!("empty request; the requests are {REQUESTS}"),
            line,
        )),
        _ => Err(error_json(
            format!("unknown request {text:?}; the requests are {REQUESTS}"),
            line,
        )),
    }
}

/// Hands `request` to the daemon's loop and encodes its answer.
async fn answer(requests: &mpsc::Sender<Query>, request: Request, line: &[u8]) -> Vec<u8> {
    async fn ask<T: Serialize>(
        requests: &mpsc::Sender<Query>,
        query: Query,
        rx: oneshot::Receiver<T>,
        line: &[u8],
    ) -> Vec<u8> {
        let answered = match requests.send(query).await {
            Ok(()) => rx.await.ok(),
            Err(_) => None,
        };
        match answered.map(|answer| serde_json::to_vec(&answer)) {
            Some(Ok(json)) => json,
            Some(Err(e)) => error_json(format!("encoding the answer: {e}"), line),
            None => error_json("the daemon is stopping", line),
        }
    }
    match request {
        Request::RouteView => {
            let (tx, rx) = oneshot::channel();
            ask(requests, Query::RouteView(tx), rx, line).await
        }
        Request::RouteFor(address) => {
            let (tx, rx) = oneshot::channel();
            ask(requests, Query::RouteFor(address, tx), rx, line).await
        }
    }
}

pub fn socket_path(pin_dir: &Path) -> PathBuf {
    crate::state::state_path(pin_dir)
        .with_extension("")
        .with_extension("sock")
}

/// Serves the socket: each request is handed to the daemon's loop through
/// `requests`, which answers on the enclosed channel.
pub async fn serve(path: PathBuf, requests: mpsc::Sender<Query>) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(&path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let listener =
        UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    loop {
        let (stream, _) = listener.accept().await?;
        let requests = requests.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = Vec::new();
            let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST));
            let answer = match reader.read_until(b'\n', &mut line).await {
                Err(e) => error_json(format!("reading the request: {e}"), &line),
                Ok(_) => match parse_request(&line) {
                    Err(error) => error,
                    Ok(request) => answer(&requests, request, &line).await,
                },
            };
            let _ = write.write_all(&answer).await;
            let _ = write.shutdown().await;
            // Request bytes left unread would make the close a reset, which
            // the client can see before the answer: read them away
            // (bounded, briefly).
            let mut rest = reader.into_inner().into_inner();
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let mut sink = [0u8; 4096];
                let mut total = 0;
                while total < 64 * 1024 {
                    match tokio::io::AsyncReadExt::read(&mut rest, &mut sink).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total += n,
                    }
                }
            })
            .await;
        });
    }
}

/// Asks the daemon behind `pin_dir` for its route view.
pub fn route_view(pin_dir: &Path) -> anyhow::Result<RouteView> {
    ask(pin_dir, ROUTE_VIEW, "a route view")
}

/// Asks the daemon behind `pin_dir` which programmed prefix the maps
/// answer `address` from.
pub fn route_for(pin_dir: &Path, address: IpAddr) -> anyhow::Result<RouteMatch> {
    ask(pin_dir, &format!("{ROUTE_FOR} {address}"), "a route match")
}

fn ask<T: DeserializeOwned>(pin_dir: &Path, request: &str, what: &str) -> anyhow::Result<T> {
    let path = socket_path(pin_dir);
    let mut stream = UnixStream::connect(&path).with_context(|| {
        format!(
            "asking the daemon at {} (is `pf-sidecar run` running for {}?)",
            path.display(),
            pin_dir.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.write_all(format!("{request}\n").as_bytes())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    if let Ok(error) = serde_json::from_slice::<ErrorAnswer>(&answer) {
        anyhow::bail!("the daemon answered: {}", error.error);
    }
    serde_json::from_slice(&answer).with_context(|| format!("the daemon's answer is not {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pf_control::{programmer::Target, rib::Source};

    fn ask(path: &Path, request: &[u8]) -> serde_json::Value {
        let mut stream = UnixStream::connect(path).unwrap();
        stream.write_all(request).unwrap();
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        serde_json::from_slice(&answer).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {:?} for {request:?}",
                String::from_utf8_lossy(&answer)
            )
        })
    }

    #[test]
    fn every_answer_is_json_including_errors() {
        let path =
            std::env::temp_dir().join(format!("pf-query-test-{}/q.sock", std::process::id()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (tx, mut rx) = mpsc::channel::<Query>(4);
        let serving = path.clone();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                tokio::spawn(async move {
                    while let Some(query) = rx.recv().await {
                        match query {
                            Query::RouteView(reply) => {
                                let _ = reply.send(RouteView {
                                    route_source: Source::Fpm,
                                    replay_complete: true,
                                    fpm_connected: false,
                                    fpm_last_message_age_ms: Some(42_000),
                                    routes: vec![(
                                        "192.0.2.0/24".parse().unwrap(),
                                        Target::Blackhole,
                                    )],
                                });
                            }
                            Query::RouteFor(address, reply) => {
                                let _ = reply.send(RouteMatch {
                                    address,
                                    route_source: Source::Fpm,
                                    prefix: Some("192.0.2.0/24".parse().unwrap()),
                                    action: Some("blackhole".into()),
                                    deferred: false,
                                });
                            }
                        }
                    }
                });
                let _ = tokio::time::timeout(Duration::from_secs(10), serve(serving, tx)).await;
            })
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while UnixStream::connect(&path).is_err() {
            assert!(std::time::Instant::now() < deadline, "never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        let view = ask(&path, b"route-view\n");
        assert_eq!(view["fpm_connected"], false);
        assert_eq!(view["fpm_last_message_age_ms"], 42_000);
        let route = ask(&path, b"route-for 192.0.2.7\n");
        assert_eq!(route["address"], "192.0.2.7");
        assert_eq!(route["prefix"], "192.0.2.0/24");
        for (request, says) in [
            (&b"garbage\n"[..], "unknown request \"garbage\""),
            (b"route-view \" \\ \n", "unknown request"),
            (b"route-for\n", "unknown request"),
            (b"route-for 192.0.2.300\n", "not an IP address"),
            (b"\n", "empty request"),
            (b"", "empty request"),
            (&[0xff, 0xfe, b'\n'], "not UTF-8"),
            (&[b'x'; 300], "longer than 256 bytes"),
        ] {
            let answer = ask(&path, request);
            let error = answer["error"]
                .as_str()
                .unwrap_or_else(|| panic!("{answer}"));
            assert!(error.contains(says), "{request:?}: {answer}");
            assert!(answer["request"].is_string(), "{answer}");
        }
        drop(thread);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
