//! The daemon's query socket: read-only questions about what it holds in
//! memory, answered as one JSON document per connection. `diff --against
//! fpm` asks for the routes the FPM stream gave. The socket is root-only
//! (0600) and sits beside the state file.

use std::{
    io::{Read, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::UnixListener,
    sync::{mpsc, oneshot},
};

use crate::{control::rib::Source, programmer::Target};

/// The request for [`RouteView`].
pub const ROUTE_VIEW: &str = "route-view";
/// A request line longer than this is refused.
const MAX_REQUEST: u64 = 256;

/// The routes the daemon wants programmed, as its RIB holds them.
#[derive(Debug, Serialize, Deserialize)]
pub struct RouteView {
    pub route_source: Source,
    /// For FPM: whether the last replay was declared complete.
    pub replay_complete: bool,
    pub routes: Vec<(IpNet, Target)>,
}

pub fn socket_path(pin_dir: &Path) -> PathBuf {
    crate::daemon::state_path(pin_dir)
        .with_extension("")
        .with_extension("sock")
}

/// Serves the socket: each request is handed to the daemon's loop through
/// `requests`, which answers on the enclosed channel.
pub async fn serve(
    path: PathBuf,
    requests: mpsc::Sender<oneshot::Sender<RouteView>>,
) -> anyhow::Result<()> {
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
            let mut line = String::new();
            let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST));
            if reader.read_line(&mut line).await.is_err() {
                return;
            }
            let answer = match line.trim() {
                ROUTE_VIEW => {
                    let (tx, rx) = oneshot::channel();
                    if requests.send(tx).await.is_err() {
                        return;
                    }
                    match rx.await {
                        Ok(view) => serde_json::to_vec(&view).unwrap_or_default(),
                        Err(_) => return,
                    }
                }
                other => format!("{{\"error\":\"unknown request {other:?}\"}}").into_bytes(),
            };
            let _ = write.write_all(&answer).await;
            let _ = write.shutdown().await;
        });
    }
}

/// Asks the daemon behind `pin_dir` for its route view.
pub fn route_view(pin_dir: &Path) -> anyhow::Result<RouteView> {
    let path = socket_path(pin_dir);
    let mut stream = UnixStream::connect(&path).with_context(|| {
        format!(
            "asking the daemon at {} (is `pf-sidecar run` running for {}?)",
            path.display(),
            pin_dir.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.write_all(format!("{ROUTE_VIEW}\n").as_bytes())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    serde_json::from_slice(&answer).context("the daemon's answer is not a route view")
}
