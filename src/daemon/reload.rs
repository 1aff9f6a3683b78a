//! SIGHUP: the configuration read again and put in force for new
//! connections.

use std::sync::Arc;
use std::time::Duration;

use crate::drain::tee::Sink;
use crate::journal::EventKind;
use crate::state::Current;

use super::{bind_new, start_listeners, warn_unenforced, Listeners};

/// SIGHUP: reads the config again. New connections get the new profiles,
/// targets, drains, banner, limits and host keys; live ones keep theirs.
/// Listen addresses are added and removed. A config that does not pass
/// `config check`, or cannot be put in force, leaves the old one in force.
pub(super) async fn reload(current: &Arc<Current>, listeners: &mut Listeners) {
    let old = current.get();
    let path = old.config.path.clone();
    tracing::info!(config = %path.display(), "SIGHUP: reloading the configuration");
    let outcome = async {
        let checked = crate::checked::load(&path).map_err(|e| e.to_string())?;
        let config = &checked.config;
        if config.server.journal != old.config.server.journal {
            return Err(format!(
                "{}: server.journal cannot change while the daemon runs (restart it to use {})",
                path.display(),
                config.server.journal
            ));
        }
        let keys =
            crate::ssh::load_host_keys(&config.server.host_keys).map_err(|e| e.to_string())?;
        let new = bind_new(&config.server.listen, listeners).await?;
        let russh = crate::ssh::russh_config(config, keys);
        Ok((checked, russh, new))
    }
    .await;
    let (checked, russh, new) = match outcome {
        Ok(x) => x,
        Err(e) => {
            // One line each: journald gives every line its own priority.
            for line in e.lines() {
                tracing::error!("reload failed: {line}");
            }
            tracing::error!("reload failed; the configuration in force stays");
            let detail = serde_json::json!({"config": path, "error": e});
            if let Err(e) = old
                .db
                .call(move |j| j.event(None, EventKind::DaemonReloadFailed, detail))
                .await
            {
                tracing::error!(error = %e, "could not record daemon.reload_failed");
            }
            return;
        }
    };
    for (changed, table) in [
        (checked.config.api != old.config.api, "[api]"),
        (checked.config.metrics != old.config.metrics, "[metrics]"),
        (
            checked.config.server.workers() != old.config.server.workers(),
            "server.workers",
        ),
    ] {
        if changed {
            tracing::warn!("a changed {table} applies at the next start, not on reload");
        }
    }
    let next = Arc::new(old.next(checked, russh));
    let config = next.config.clone();
    current.set(next.clone());
    warn_unenforced(&config, &next.containment);
    start_listeners(new, current, listeners);
    let gone: Vec<_> = listeners
        .keys()
        .filter(|a| !config.server.listen.contains(a))
        .copied()
        .collect();
    for a in &gone {
        if let Some(l) = listeners.remove(a) {
            let _ = l.stop.send(true);
            tracing::info!(address = %l.bound, "no longer listening");
        }
    }
    // Drains no longer configured finish with the sessions that use them.
    let retired: Vec<Sink> = old
        .drains
        .iter()
        .filter(|s| !next.drains.iter().any(|n| n.drain.same(&s.drain)))
        .cloned()
        .collect();
    if !retired.is_empty() {
        let old_drains = old.drains.clone();
        drop(old);
        tokio::spawn(async move {
            // This task's reference is the last once those sessions end.
            while Arc::strong_count(&old_drains) > 1 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            for s in retired {
                let (left, _) = s.drain.close(Duration::from_secs(3)).await;
                tracing::info!(drain = %s.spec.name, unsent = left, "drain removed from the configuration closed");
            }
        });
    }
    let detail = serde_json::json!({
        "config": path,
        "listen": config.server.listen,
        "profiles": config.profiles.keys().collect::<Vec<_>>(),
        "targets": config.targets.keys().collect::<Vec<_>>(),
        "drains": config.drains.iter().map(|d| &d.spec.name).collect::<Vec<_>>(),
    });
    tracing::info!(%detail, "configuration reloaded");
    if let Err(e) = next
        .db
        .call(move |j| j.event(None, EventKind::DaemonReloaded, detail))
        .await
    {
        tracing::error!(error = %e, "could not record daemon.reloaded");
    }
}
