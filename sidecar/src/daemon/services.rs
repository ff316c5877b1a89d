//! The daemon's services besides the control loop: the FPM listener, the
//! query socket, the metrics listener and reloads on SIGHUP.

use std::{path::Path, time::Duration};

use anyhow::Context;
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
};

use super::Daemon;
use crate::{
    config::Config,
    metrics,
    query::{self, Query},
    source::{
        fpm::{serve_sessions, ReadLimits, SessionFeed},
        fpm_peer::Admission,
    },
};

/// Answers `diff --against fpm` and `lookup` on the query socket beside
/// the state file.
pub(super) fn start_query(pin_dir: &Path) -> mpsc::Receiver<Query> {
    let (query_tx, query_rx) = mpsc::channel::<Query>(4);
    let query_socket = query::socket_path(pin_dir);
    tokio::spawn(async move {
        if let Err(err) = query::serve(query_socket, query_tx).await {
            tracing::error!(%err, "the query socket failed; `diff --against fpm` is unavailable");
        }
    });
    query_rx
}

impl Daemon<'_> {
    pub(super) async fn start_fpm(
        &mut self,
        feed: mpsc::Sender<SessionFeed>,
    ) -> anyhow::Result<()> {
        let fpm = &self.config.fpm;
        let listen = self.config.fpm_listen()?;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the FPM listener on {listen}"))?;
        tracing::info!(%listen, "waiting for zebra's FPM connection");
        let users = self.config.fpm_allowed_users()?;
        if !users.missing.is_empty() {
            tracing::info!(
                missing = users.missing.join(", "),
                "fpm.allowed_users names users this system does not have; they are left out"
            );
        }
        tracing::info!(uids = ?users.uids, "loopback FPM connections are accepted from sockets owned by these uids only");
        self.state.fpm_allowed_uids = users.uids.clone();
        let admission = Admission {
            listen,
            allow: self.config.fpm_allow()?,
            users,
        };
        let limits = ReadLimits {
            idle: Duration::from_millis(fpm.idle_timeout_ms),
            frame: Duration::from_millis(fpm.frame_timeout_ms),
        };
        let serving = serve_sessions(
            listener,
            admission,
            self.listener.clone(),
            limits,
            fpm.offload_replies,
            feed,
        );
        tokio::spawn(async move {
            if let Err(err) = serving.await {
                tracing::error!(%err, "the FPM listener stopped");
            }
        });
        Ok(())
    }

    /// Serves `/metrics` when `metrics.listen` is set; each scrape asks the
    /// loop for a page.
    pub(super) async fn start_metrics(
        &self,
    ) -> anyhow::Result<mpsc::Receiver<oneshot::Sender<String>>> {
        let (pages_tx, pages_rx) = mpsc::channel::<oneshot::Sender<String>>(4);
        if !self.config.metrics.listen.is_empty() {
            let listen: std::net::SocketAddr = self.config.metrics.listen.parse()?;
            let listener = metrics::bind(listen)
                .await
                .with_context(|| format!("binding the metrics listener on {listen}"))?;
            tracing::info!(%listen, "serving Prometheus metrics on /metrics");
            tokio::spawn(metrics::serve(listener, pages_tx));
        }
        Ok(pages_rx)
    }

    /// SIGHUP: the settings that apply without a restart.
    pub(super) fn reload(&mut self, config_path: Option<&std::path::Path>) {
        match Config::load(config_path, &Default::default()) {
            Ok(new) => {
                tracing::info!("configuration reloaded (mode, dry-run, hash seed, fail-safe, heartbeat, interfaces)");
                // Attaches what was added (or detached from outside),
                // detaches what was removed.
                self.ports.apply(
                    &new.general.interfaces,
                    &mut self.programs,
                    self.controller.writer_mut(),
                );
                let kept = self.config.needs_restart(&new);
                if !kept.is_empty() {
                    tracing::warn!(
                        keys = kept.join(", "),
                        "these changes are not applied until a restart"
                    );
                }
                self.config.datapath = new.datapath;
                self.config.general.interfaces = new.general.interfaces;
            }
            Err(err) => tracing::error!(%err, "reload refused; keeping the running configuration"),
        }
    }
}
