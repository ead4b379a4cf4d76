//! Connections spread over several servers (the nodes of a cluster): a
//! context per URL, and connections opened round-robin over a URL list.

use std::sync::Arc;

use super::{open_all, server_addr, Ctx, Ws};

impl Ctx {
    /// The same context (clock, sources, secret, CPU meter) aimed at
    /// another server; the URL must be a loopback `ws://` URL.
    pub(crate) fn at(&self, url: &str) -> Result<Arc<Ctx>, String> {
        Ok(Arc::new(Ctx {
            server: server_addr(url)?,
            url: url.to_owned(),
            ..self.clone()
        }))
    }
}

/// Opens `n` connections, connection `i` to `urls[i % urls.len()]`, for
/// users `PREFIX{k}-{j}` (k: the URL's index; unique across URLs, so no
/// connection replaces another on a cluster that keeps one per user).
pub(crate) async fn open_spread(
    ctx: &Arc<Ctx>,
    urls: &[String],
    prefix: &str,
    n: usize,
    what: &str,
) -> Result<Vec<Ws>, String> {
    if urls.is_empty() {
        return Err("no URL to spread connections over".into());
    }
    let mut out = Vec::with_capacity(n);
    for (k, url) in urls.iter().enumerate() {
        let count = n / urls.len() + usize::from(k < n % urls.len());
        let sub = ctx.at(url)?;
        let reqs = sub.requests(&format!("{prefix}{k}"), count)?;
        out.extend(open_all(&sub, reqs, &format!("{what} @{k}")).await?);
    }
    Ok(out)
}
