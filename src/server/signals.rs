//! Shutdown signals: the first SIGTERM or Ctrl-C starts a graceful shutdown; a second one ends
//! the process at once.

/// Resolves on the first SIGTERM or Ctrl-C; from then on a second one exits the process at once.
pub async fn shutdown_signal() {
    one_signal().await;
    // Not request work: a watcher that lives until the process ends.
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async {
        one_signal().await;
        tracing::warn!("second shutdown signal: exiting now, abandoning work in progress");
        std::process::exit(130);
    });
}

async fn one_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
